"""The console in a real headless Chromium (Debian's `chromium`, driven by Playwright) against
the service served by uvicorn with the fake model over HTTP (see tests/api/browser.py).

Every wait is Playwright's `expect`, bounded by its timeout; no sleeps. Screenshots of the inbox
and of a run page are saved as test artifacts.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, ViewportSize, expect
from pydantic import SecretStr

from app.testing import FakeModel, Rule, Script, call, calls, error, text
from tests.api.browser import Browsing, chromium, screenshot
from tests.api.conftest import Live, LiveFactory

pytestmark = pytest.mark.anyio

ARGUMENTS = "Arguments (JSON, editable before approving)"
REASON = "Reason (told to the model when you reject)"
PHONE = ViewportSize(width=390, height=844)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def browsing(browser: Browser) -> AsyncIterator[Browsing]:
    async with Browsing.context_of(browser) as found:
        yield found


def api(live: Live, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=live.url, headers=headers, timeout=30)


def pending_run(live: Live, text_input: str, key: str | None = None) -> dict[str, Any]:
    """A run of `calc` resting at pending_approval, created over the API."""
    with api(live, key) as client:
        response = client.post(
            "/runs", params={"wait": 10}, json={"agent": "calc", "input": text_input}
        )
    run: dict[str, Any] = response.json()
    assert run["status"] == "pending_approval", run
    return run


def card_of(page: Page, run_id: str) -> Any:
    return page.locator("article.approval").filter(has=page.get_by_role("link", name=run_id))


def run_status(page: Page) -> Any:
    return page.locator(".summary .facts .status")


async def test_start_a_run_approve_it_edited_in_the_inbox_and_watch_it_stream_to_completed(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script(
        "m",
        [
            call("delete_record", {"record_id": "r_1"}),
            text("Deleted the record as asked.", hold_after=[2]),
        ],
    )
    with serve_live() as live:
        runs = await browsing.open(f"{live.url}/console#/new")
        await runs.get_by_label("Agent").select_option("calc")
        await runs.get_by_label("Input").fill("Please delete r_1")
        context = runs.get_by_label("Context (optional JSON object)")
        await context.fill('{"user_id": ')
        await runs.get_by_role("button", name="Start run").click()
        await expect(runs.locator(".field-error:visible")).to_contain_text("Not valid JSON")
        assert not [r for r in browsing.api_requests() if r.method == "POST"]
        # What the service refuses comes back readably, on the field it names.
        session = runs.get_by_label("Session (optional)")
        await session.fill("not a session id!")
        await context.fill('{"user_id": "u_1"}')
        await runs.get_by_role("button", name="Start run").click()
        await expect(runs.get_by_role("alert")).to_contain_text("Validation error (422)")
        await expect(session).to_have_attribute("aria-invalid", "true")
        await session.fill("")
        await runs.get_by_role("button", name="Start run").click()

        # The form leads to the run's page, which streams it: it waits for a person.
        await expect(runs).to_have_url(re.compile(r"#/runs/run_\w+$"))
        run_id = runs.url.rsplit("/", 1)[1]
        await expect(run_status(runs)).to_have_text("pending approval")

        inbox = await browsing.open(f"{live.url}/console")
        card = card_of(inbox, run_id)
        await expect(card.get_by_role("heading", name=re.compile("delete_record"))).to_be_visible()
        await expect(card.locator(".context")).to_contain_text("Please delete r_1")
        await screenshot(inbox, "console.png", readme=True)

        arguments = card.get_by_label(ARGUMENTS)
        await arguments.fill('{"record_id": ')
        await card.get_by_role("button", name="Approve").click()
        await expect(card.locator(".field-error:visible")).to_contain_text("Not valid JSON")
        assert not [r for r in browsing.api_requests() if r.url.endswith("/approvals")]
        await arguments.fill('{"record_id": "r_2"}')
        await card.get_by_role("button", name="Approve").click()
        await expect(card.locator(".outcome")).to_contain_text("Approved")

        # The run page, open all along, shows the answer as the model writes it...
        writing = runs.locator(".conversation .writing")
        try:
            await expect(writing).to_contain_text("Deleted the")
            await expect(run_status(runs)).to_have_text("running")
        finally:
            fake.release()
        # ...then the whole of it, the edited argument in the tool's output, usage and steps.
        await expect(run_status(runs)).to_have_text("completed")
        await expect(writing).to_have_count(0)
        await expect(runs.locator(".final")).to_have_text("Deleted the record as asked.")
        tool_call = runs.locator(".tool-call").filter(has_text="delete_record")
        await expect(tool_call.locator(".output")).to_have_text("deleted r_2")
        await expect(tool_call.locator(".decision")).to_contain_text("Approved")
        await expect(runs.locator(".summary")).to_contain_text("2 model requests")
        await expect(runs.locator(".steps li")).to_have_count(2)
        await expect(runs.locator(".stream-state")).to_have_text(re.compile("has ended"))
        await screenshot(runs, "console-run.png", readme=True)

        with api(live) as client:
            run = client.get(f"/runs/{run_id}").json()
    assert run["decisions"][0]["arguments"] == {"record_id": "r_2"}
    assert run["final_output"] == "Deleted the record as asked."


async def test_reject_with_a_reason_and_read_it_in_the_conversation(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r_9"}), text("I left r_9 alone.")])
    with serve_live() as live:
        run = pending_run(live, "delete r_9")
        page = await browsing.open(f"{live.url}/console")
        card = card_of(page, run["id"])
        await card.get_by_label(REASON).fill("not on a Friday")
        await card.get_by_role("button", name="Reject").click()
        await expect(card.locator(".outcome")).to_contain_text("Rejected")

        await card.get_by_role("link", name=run["id"]).click()
        await expect(run_status(page)).to_have_text("completed")
        tool_call = page.locator(".tool-call").filter(has_text="delete_record")
        await expect(tool_call.locator(".status")).to_have_text("rejected")
        await expect(tool_call.locator(".decision")).to_have_text(
            re.compile("Rejected.*not on a Friday")
        )
        await expect(tool_call.locator(".output")).to_contain_text("Reason: not on a Friday")
        await expect(page.locator(".conversation")).to_contain_text("I left r_9 alone.")


async def test_a_call_decided_elsewhere_is_a_plain_conflict_in_its_card(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    # Arguments are untrusted: markup in them is shown as text, never built into the page.
    markup = "<img src=x onerror=document.title=1>"
    fake.script("m", [call("delete_record", {"record_id": markup}), text("Done.")])
    with serve_live() as live:
        page = await browsing.open(f"{live.url}/console")
        await expect(page.locator("p.summary")).to_have_text("Nothing waits for a decision.")
        run = pending_run(live, "delete r_3")
        # It appears without a reload, and is announced.
        card = card_of(page, run["id"])
        await expect(card).to_be_visible()
        await expect(page.locator("#announcer")).to_have_text(
            "New approval: delete_record for agent calc."
        )
        await expect(card.get_by_label(ARGUMENTS)).to_have_value(re.compile(re.escape(markup)))
        await expect(card.locator(".context")).to_contain_text(markup)
        await expect(page.locator("img")).to_have_count(0)
        await card.get_by_label(ARGUMENTS).fill('{"record_id": "r_4"}')
        call_id = run["pending_approvals"][0]["call_id"]
        with api(live) as client:
            decided = client.post(
                f"/runs/{run['id']}/approvals",
                json={"decisions": [{"call_id": call_id, "approved": True}]},
            )
        assert decided.status_code == 200

        await card.get_by_role("button", name="Approve").click()
        outcome = card.locator(".outcome [role=alert]")
        await expect(outcome).to_contain_text("(409)")
        await expect(outcome).to_contain_text("decided elsewhere")
        await expect(card.get_by_role("button", name="Approve")).to_be_disabled()
        await card.get_by_role("button", name="Dismiss").click()
        await expect(card).to_have_count(0)


async def test_with_api_keys_the_console_asks_for_one_and_sends_it_only_as_a_bearer(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r_5"}), text("Done.")])
    keys = {
        "api_keys": SecretStr("ui:ui-secret"),
        "approver_api_keys": SecretStr("lead:lead-secret"),
    }
    with serve_live(**keys) as live:
        run = pending_run(live, "delete r_5", key="ui-secret")
        page = await browsing.open(f"{live.url}/console")

        dialog = page.get_by_role("dialog")
        await expect(dialog).to_contain_text("This service needs an API key")
        # Said once, though the inbox, the navigation's count and the agents were all refused.
        assert (await dialog.inner_text()).count("needs an API key") == 1
        # Closed, the prompt stays closed while the inbox's polls are refused.
        await page.keyboard.press("Escape")
        async with page.expect_response(lambda response: "/approvals?" in response.url) as polled:
            pass
        assert (await polled.value).status == 401
        await expect(dialog).to_be_hidden()
        await expect(page.get_by_role("alert")).to_contain_text("Unauthorized (401)")
        await page.get_by_role("button", name="Enter key").click()
        await dialog.get_by_label("API key").fill("ui-secret")
        await dialog.get_by_role("button", name="Use this key").click()
        card = card_of(page, run["id"])
        await expect(card).to_be_visible()
        assert await page.evaluate("sessionStorage.getItem('agent-runs.api-key')") == "ui-secret"
        assert await page.evaluate("localStorage.length") == 0

        # A key that may look but not decide is told so plainly.
        await card.get_by_role("button", name="Approve").click()
        await expect(card.locator(".outcome")).to_contain_text("Forbidden (403)")
        await expect(card.locator(".outcome")).to_contain_text("may not decide approvals")

        await page.get_by_role("button", name="Change key").click()
        await dialog.get_by_label("API key").fill("lead-secret")
        await dialog.get_by_role("button", name="Use this key").click()
        card = card_of(page, run["id"])
        await card.get_by_role("button", name="Approve").click()
        await expect(card.locator(".outcome")).to_contain_text("Approved")
        await card.get_by_role("link", name=run["id"]).click()
        await expect(run_status(page)).to_have_text("completed")

        sent = [(r, await r.all_headers()) for r in browsing.api_requests()]
        static = {
            urlsplit(r.url).path: await r.response()
            for r in browsing.requests
            if urlsplit(r.url).path.startswith("/console")
        }
        with api(live, "lead-secret") as client:
            decided_by = client.get(f"/runs/{run['id']}").json()["decisions"][0]["decided_by"]

    assert decided_by == "lead"
    assert {"/console", "/console/app.js", "/console/api.js"} <= set(static)
    assert all(response is not None and response.status == 200 for response in static.values())
    for request, _ in sent:
        assert "secret" not in request.url, request.url
    keyed = [headers.get("authorization") for _, headers in sent]
    first_keyed = keyed.index("Bearer ui-secret")
    assert None not in keyed[first_keyed:], "every call after the key was given carries it"
    streams = [headers for request, headers in sent if request.url.endswith("/events")]
    assert streams
    assert all(headers["authorization"] == "Bearer lead-secret" for headers in streams)


async def use_key(page: Page, key: str, *, asked: bool = False) -> None:
    """Give the console a key: in the prompt it opened by itself when `asked`, else by the button.

    Which one must be said: the page asks once its first request is refused, so a test looking
    for the prompt too early would click the button while the prompt opens over it.
    """
    dialog = page.get_by_role("dialog")
    if asked:
        await expect(dialog).to_be_visible()
    else:
        await page.get_by_role("button", name=re.compile("(Enter|Change) key")).click()
    await dialog.get_by_label("API key").fill(key)
    await dialog.get_by_role("button", name="Use this key").click()


async def test_a_tenant_sees_its_own_runs_and_an_admin_every_tenant_s_with_a_filter(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r_7"}), text("Done.")])
    keys = {
        "api_keys": SecretStr("acme/ui:acme-secret, globex/ui:globex-secret"),
        "admin_api_keys": SecretStr("ops/root:root-secret"),
    }
    with serve_live(**keys) as live:
        acme = pending_run(live, "delete r_7", key="acme-secret")
        globex = pending_run(live, "delete r_7", key="globex-secret")
        page = await browsing.open(f"{live.url}/console#/runs")
        await use_key(page, "acme-secret", asked=True)
        who = page.locator("#who")
        await expect(who).to_have_text("Signed in as ui · acme")
        runs = page.locator("li.run")
        await expect(runs).to_have_count(1)
        await expect(runs).to_contain_text(acme["id"])
        await expect(runs).not_to_contain_text("tenant")
        await expect(page.get_by_role("button", name="Apply filters")).to_be_visible()
        await expect(page.get_by_label("Tenant")).to_have_count(0)
        await page.goto(f"{live.url}/console#/approvals")
        await expect(card_of(page, acme["id"])).to_be_visible()
        await expect(page.locator("article.approval")).to_have_count(1)

        # An admin sees every tenant's, each named, and may narrow them to one.
        await use_key(page, "root-secret")
        await expect(who).to_have_text("Signed in as root · ops (admin)")
        for run in (acme, globex):
            await expect(card_of(page, run["id"])).to_be_visible()
        await expect(card_of(page, globex["id"])).to_contain_text("Tenant globex")
        await page.get_by_label("Tenant").fill("acme")
        await page.get_by_role("button", name="Apply filters").click()
        await expect(page).to_have_url(re.compile(r"#/approvals\?tenant=acme$"))
        await expect(page.locator("article.approval")).to_have_count(1)
        card = card_of(page, acme["id"])
        await card.get_by_role("button", name="Approve").click()
        await expect(card.locator(".outcome")).to_contain_text("Approved")

        await page.goto(f"{live.url}/console#/runs")
        await expect(runs).to_have_count(2)
        await page.get_by_label("Tenant").fill("globex")
        await page.get_by_role("button", name="Apply filters").click()
        await expect(page).to_have_url(re.compile(r"#/runs\?tenant=globex$"))
        await expect(runs).to_have_count(1)
        await expect(runs).to_contain_text(globex["id"])
        await expect(runs).to_contain_text("tenant globex")


async def test_runs_are_listed_by_filter_and_cancelled_from_their_page(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r_6"}), text("Done.")])
    with serve_live() as live:
        parked = pending_run(live, "delete r_6")
        with api(live) as client:
            client.post("/runs", json={"agent": "billing", "input": "hello", "session_id": "s-1"})
        page = await browsing.open(f"{live.url}/console#/runs")
        await expect(page.locator("li.run")).to_have_count(2)

        await page.get_by_label("pending approval").check()
        await page.get_by_role("button", name="Apply filters").click()
        await expect(page).to_have_url(re.compile(r"#/runs\?status=pending_approval$"))
        await expect(page.locator("li.run")).to_have_count(1)
        await expect(page.locator("li.run")).to_contain_text(parked["id"])

        await page.goto(f"{live.url}/console#/runs?agent=billing&session_id=s-1")
        await expect(page.locator("li.run")).to_have_count(1)
        await expect(page.locator("li.run")).to_contain_text("session s-1")

        await page.goto(f"{live.url}/console#/runs/{parked['id']}")
        await expect(run_status(page)).to_have_text("pending approval")
        waiting = page.locator("article.approval")
        await expect(
            waiting.get_by_role("heading", name=re.compile("delete_record"))
        ).to_be_visible()
        await page.get_by_role("button", name="Cancel run").click()
        await expect(run_status(page)).to_have_text("cancelled")
        await expect(waiting).to_have_count(0)
        # An ended run offers nothing it cannot do: no Cancel, no empty "Pending approvals".
        await expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
        await expect(page.get_by_role("heading", name="Pending approvals")).to_have_count(0)
        await expect(page.locator(".conversation")).to_contain_text("Run cancelled")


async def test_a_dropped_event_stream_resumes_after_the_last_event_it_got(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script("m", [text("Hello there.")])
    with serve_live() as live:
        with api(live) as client:
            run = client.post(
                "/runs", params={"wait": 10}, json={"agent": "calc", "input": "hi"}
            ).json()
        assert run["status"] == "completed"
        resumed: list[str | None] = []

        async def drop_after_the_first_event(route: Route) -> None:
            if not resumed:
                resumed.append(None)
                first = {"run_id": run["id"], "status": "queued", "current_agent": "calc"}
                body = f"id: 1\nevent: run.queued\ndata: {json.dumps(first)}\n\n"
                await route.fulfill(status=200, content_type="text/event-stream", body=body)
                return
            resumed.append((await route.request.all_headers()).get("last-event-id"))
            await route.continue_()

        await browsing.context.route(re.compile(r"/events$"), drop_after_the_first_event)
        page = await browsing.open(f"{live.url}/console#/runs/{run['id']}")
        await expect(page.locator(".stream-state")).to_have_text(re.compile("has ended"))
        await expect(page.locator(".conversation")).to_contain_text("Hello there.")
        queued = page.locator(".conversation .lifecycle", has_text="Run queued")
        await expect(queued).to_have_count(1)

    assert resumed == [None, "1"]


async def test_at_phone_width_with_the_keyboard_only(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script(
        "m",
        [
            call("delete_record", {"record_id": "r_7"}),
            call("delete_record", {"record_id": "r_8"}),
            text("Done."),
        ],
    )
    with serve_live() as live:
        run = pending_run(live, "delete r_7")
        page = await browsing.open(f"{live.url}/console", viewport=PHONE)
        card = card_of(page, run["id"])
        approve = card.get_by_role("button", name="Approve")
        await expect(approve).to_be_visible()
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        box = await approve.bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= PHONE["width"]

        # Tab from the top of the page (bounded) to "remember" and tick it, then to Approve.
        remember = card.get_by_role("checkbox")
        for _ in range(40):
            await page.keyboard.press("Tab")
            if await remember.evaluate("box => box === document.activeElement"):
                break
        else:
            raise AssertionError("Tab never reached the remember box")
        await page.keyboard.press("Space")
        await expect(remember).to_be_checked()
        await page.keyboard.press("Tab")
        await expect(approve).to_be_focused()
        outline = await approve.evaluate("button => getComputedStyle(button).outlineStyle")
        assert outline != "none", "the focused button shows its focus"
        await page.keyboard.press("Enter")
        await expect(card.locator(".outcome")).to_contain_text("Approved")

        # The run's second delete_record was approved by that decision, and says so.
        await page.goto(f"{live.url}/console#/runs/{run['id']}")
        await expect(run_status(page)).to_have_text("completed")
        second = page.locator(".tool-call").filter(has_text="deleted r_8")
        await expect(second.locator(".decision")).to_contain_text("earlier approval")
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        await screenshot(page, "console-run-phone.png")


async def keyed(browsing: Browsing, key: str) -> None:
    """Every page of this context starts holding `key`, as if a person had entered it."""
    script = f"sessionStorage.setItem('agent-runs.api-key', {json.dumps(key)})"
    await browsing.context.add_init_script(script)


async def test_the_runs_list_shows_each_input_error_and_age_and_keeps_itself_current(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script(
        "m",
        Script(
            rules=[
                Rule(match="broken", replies=[error(400, message="the model refused")]),
                Rule(replies=[call("delete_record", {"record_id": "r_10"}), text("Done.")]),
            ]
        ),
    )
    with serve_live() as live:
        with api(live) as client:
            failed = client.post(
                "/runs", params={"wait": 10}, json={"agent": "calc", "input": "a broken ask"}
            ).json()
        assert failed["status"] == "failed", failed
        page = await browsing.open(f"{live.url}/console#/runs")
        entry = page.locator(f"li.run[data-run-id='{failed['id']}']")
        await expect(entry.locator(".input")).to_have_text("Input: a broken ask")
        await expect(entry.locator(".run-error")).to_contain_text("Error: model_error:")
        await expect(entry.locator(".run-error")).to_contain_text("the model refused")
        age = entry.locator("time.age")
        await expect(age).to_have_text(re.compile(r"^\d+ s ago$"))
        assert await age.get_attribute("datetime") == failed["created_at"]

        # A run started elsewhere appears, and its change of status shows, with no reload.
        parked = pending_run(live, "delete r_10")
        entry = page.locator(f"li.run[data-run-id='{parked['id']}']")
        await expect(entry.locator(".status")).to_have_text("pending approval")
        await expect(page.locator("li.run").first).to_have_attribute("data-run-id", parked["id"])
        await expect(entry.locator(".input")).to_have_text("Input: delete r_10")
        call_id = parked["pending_approvals"][0]["call_id"]
        with api(live) as client:
            client.post(
                f"/runs/{parked['id']}/approvals",
                json={"decisions": [{"call_id": call_id, "approved": True}]},
            )
        await expect(entry.locator(".status")).to_have_text("completed")
        await expect(entry.locator(".excerpt")).to_have_text("Output: Done.")
        await expect(page.locator("li.run")).to_have_count(2)
        await screenshot(page, "console-runs.png", readme=True)


async def test_the_run_page_shows_when_each_thing_happened_who_decided_what_and_the_context(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script(
        "m",
        [
            calls(("delete_record", {"record_id": "r_1"}), ("delete_record", {"record_id": "r_2"})),
            text("Deleted one, kept one."),
        ],
    )
    keys = {
        "api_keys": SecretStr("ui:ui-secret"),
        "approver_api_keys": SecretStr("lead:lead-secret"),
    }
    with serve_live(**keys) as live:
        with api(live, "ui-secret") as client:
            run = client.post(
                "/runs",
                params={"wait": 10},
                json={"agent": "calc", "input": "tidy up", "context": {"user_id": "u_7"}},
            ).json()
        assert run["status"] == "pending_approval", run
        first, second = (item["call_id"] for item in run["pending_approvals"])
        await keyed(browsing, "lead-secret")
        page = await browsing.open(f"{live.url}/console#/runs/{run['id']}")

        summary = page.locator(".summary")
        await expect(summary.locator(".input")).to_have_text("tidy up")
        await expect(summary.locator(".context-variables")).to_contain_text('"user_id": "u_7"')
        cards = page.locator("article.approval")
        await expect(cards).to_have_count(2)
        # Its cards, as the inbox's, say why a person is asked and since when.
        await expect(cards.locator(".why")).to_have_count(2)
        await expect(cards.first.locator(".waited")).to_have_text(
            re.compile(r"^Waiting for a decision for \d+ s\.$")
        )

        # One call of the turn approved, its arguments edited: decided, though the run still
        # waits for the other.
        card = page.locator(f"article.approval[data-call-id='{first}']")
        await card.get_by_label(ARGUMENTS).fill('{"record_id": "r_9"}')
        await card.get_by_role("button", name="Approve").click()
        await expect(card.locator(".outcome")).to_contain_text("Approved")
        decided = page.locator(f".tool-call[data-call-id='{first}']")
        waiting = page.locator(f".tool-call[data-call-id='{second}']")
        await expect(decided.locator(".status")).to_have_text("approved")
        await expect(waiting.locator(".status")).to_have_text("pending approval")
        await expect(run_status(page)).to_have_text("pending approval")
        verdict = decided.locator(".decision .verdict")
        await expect(verdict).to_have_text(
            re.compile(r"^Approved by a person \(lead\) at .+, after waiting \d+ s$")
        )
        diff = decided.locator(".diff")
        await expect(diff.locator(".removed")).to_have_text('- "record_id": "r_1"')
        await expect(diff.locator(".added")).to_have_text('+ "record_id": "r_9"')

        other = page.locator(f"article.approval[data-call-id='{second}']")
        await other.get_by_label(REASON).fill("keep r_2")
        await other.get_by_role("button", name="Reject").click()
        await expect(run_status(page)).to_have_text("completed")

        # Each entry has its time; the call's parts theirs, so a person's wait shows.
        entries = page.locator(".conversation > li")
        await expect(page.locator(".stream-state")).to_have_text(re.compile("has ended"))
        count = await entries.count()
        await expect(page.locator(".conversation > li > time.clock")).to_have_count(count)
        await expect(decided.locator(".times")).to_have_text(
            re.compile(r"^asked for approval .+ · started .+ · finished .+$")
        )
        await expect(waiting.locator(".decision .verdict")).to_have_text(
            re.compile(r"^Rejected by a person \(lead\) at .+, after waiting \d+ s: keep r_2$")
        )
        await expect(waiting.locator(".diff")).to_have_count(0)
        # Ended: nothing to cancel, nothing pending.
        await expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
        await expect(page.get_by_role("heading", name="Pending approvals")).to_have_count(0)
        await expect(page.get_by_text("None.")).to_have_count(0)


async def test_an_inbox_card_says_what_the_tool_does_why_it_asks_and_how_long_it_waited(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script(
        "m",
        Script(
            rules=[
                Rule(match="refund", replies=[call("refund", {"amount": 250}), text("Refunded.")]),
                Rule(replies=[call("delete_record", {"record_id": "r_11"}), text("Done.")]),
            ]
        ),
    )
    with serve_live() as live:
        page = await browsing.open(f"{live.url}/console")
        approvals_link = page.get_by_role("navigation").get_by_role("link", name=re.compile("Appr"))
        await expect(approvals_link).to_have_accessible_name("Approvals")
        deleting = pending_run(live, "delete r_11")
        with api(live) as client:
            refunding = client.post(
                "/runs", params={"wait": 10}, json={"agent": "careful", "input": "refund 250"}
            ).json()
        assert refunding["status"] == "pending_approval", refunding

        # The count in the navigation follows what waits, on every page.
        await expect(approvals_link).to_have_accessible_name("Approvals 2 pending")
        delete_card = card_of(page, deleting["id"])
        await expect(delete_card.locator(".tool-description")).to_have_text("Delete a record.")
        await expect(delete_card.locator(".effect")).to_have_text(
            "Effect: unsafe: it changes something; running it twice may do it twice"
        )
        await expect(delete_card.locator(".why")).to_have_text(
            "Why approval is needed: every call of this tool needs a person's approval."
        )
        await expect(delete_card.locator(".waited")).to_have_text(
            re.compile(r"^Waiting for a decision for \d+ s\.$")
        )
        refund_card = card_of(page, refunding["id"])
        await expect(refund_card.locator(".effect")).to_contain_text("idempotent")
        await expect(refund_card.locator(".why")).to_have_text(
            "Why approval is needed: "
            "the tool's approval rule asked for a person for these arguments."
        )

        # Filters: by tool, then by agent, in the address so they can be shared.
        await page.get_by_label("Tool").select_option("refund")
        await page.get_by_role("button", name="Apply filters").click()
        await expect(page).to_have_url(re.compile(r"#/approvals\?tool=refund$"))
        await expect(page.locator("article.approval")).to_have_count(1)
        await expect(card_of(page, refunding["id"])).to_be_visible()
        await expect(page.locator("p.summary")).to_have_text(
            "1 approval waits for a decision among those filtered."
        )
        await page.goto(f"{live.url}/console#/approvals?agent=calc")
        await expect(page.locator("article.approval")).to_have_count(1)
        await expect(card_of(page, deleting["id"])).to_be_visible()
        await expect(page.get_by_label("Agent", exact=True)).to_have_value("calc")

        await card_of(page, deleting["id"]).get_by_role("button", name="Approve").click()
        await expect(approvals_link).to_have_accessible_name("Approvals 1 pending")
        await page.goto(f"{live.url}/console#/runs")
        await expect(approvals_link).to_have_accessible_name("Approvals 1 pending")
        with api(live) as client:
            call_id = refunding["pending_approvals"][0]["call_id"]
            client.post(
                f"/runs/{refunding['id']}/approvals",
                json={"decisions": [{"call_id": call_id, "approved": False}]},
            )
        await expect(approvals_link).to_have_accessible_name("Approvals")


async def test_a_call_in_doubt_says_so_as_the_reason_a_person_is_asked(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r_12"}), text("Done.")])
    with serve_live() as live:
        run = pending_run(live, "delete r_12")

        # A crash in the middle of a call is the durability tests' subject; here the service's
        # answer is marked in doubt, as it is after one, to see what the card makes of it.
        async def in_doubt(route: Route) -> None:
            response = await route.fetch()
            page = await response.json()
            for item in page["items"]:
                item["in_doubt"] = True
            await route.fulfill(response=response, json=page)

        await browsing.context.route(re.compile(r"/approvals\?status=pending&limit=100$"), in_doubt)
        page = await browsing.open(f"{live.url}/console")
        card = card_of(page, run["id"])
        await expect(card.locator(".why")).to_have_text(
            "Why approval is needed: the call started before a crash and left no result: "
            "it may or may not have taken effect."
        )
        await expect(card.locator(".warning")).to_have_text(
            "In doubt: approving runs it again; rejecting tells the model it was not done."
        )


async def test_a_structured_output_shows_as_indented_json_text_never_markup(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    value = {"total": 3, "note": "<b>not bold</b>"}
    fake.script("m", [text(json.dumps(value))])
    schema = {"type": "object", "properties": {"total": {"type": "integer"}}}
    with serve_live() as live:
        with api(live) as client:
            run = client.post(
                "/runs",
                params={"wait": 10},
                json={"agent": "calc", "input": "1+2", "output_schema": schema},
            ).json()
        assert run["final_output"] == value, run

        page = await browsing.open(f"{live.url}/console#/runs")
        entry = page.locator(f"li.run[data-run-id='{run['id']}']")
        compact = json.dumps(value, separators=(",", ":"))
        await expect(entry.locator(".excerpt")).to_have_text(f"Output: {compact}")

        page = await browsing.open(f"{live.url}/console#/runs/{run['id']}")
        shown = page.locator("pre.structured-output")
        await expect(shown).to_have_text(json.dumps(value, indent=2))
        assert await page.locator(".summary b").count() == 0


async def test_a_call_the_client_runs_is_answered_with_its_output_in_the_inbox(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script("m", [call("take_photo", {"subject": "cat"}), text("What a cat.")])
    with serve_live() as live:
        run = pending_run(live, "a photo of my cat")
        page = await browsing.open(f"{live.url}/console")
        card = card_of(page, run["id"])
        await expect(card.locator(".why")).to_contain_text("the client runs this tool")
        await expect(card.get_by_label("Arguments (as the model asked)")).to_have_attribute(
            "readonly", ""
        )
        await expect(card.get_by_label(re.compile("Approving also approves"))).to_have_count(0)

        send = card.get_by_role("button", name="Send output")
        await send.click()
        await expect(card.locator(".field-error:visible")).to_have_text(
            "Give the tool's output, or reject the call."
        )
        await card.get_by_label(re.compile("^Output \\(required")).fill("cat.jpg")
        await send.click()
        await expect(card.locator(".outcome")).to_contain_text("Output sent")

        await card.get_by_role("link", name=run["id"]).click()
        await expect(run_status(page)).to_have_text("completed")
        tool_call = page.locator(".tool-call").filter(has_text="take_photo")
        await expect(tool_call.locator(".status")).to_have_text("completed")
        await expect(tool_call.locator(".decision")).to_contain_text("Output given")
        await expect(tool_call.locator(".output")).to_have_text("cat.jpg")


async def test_an_approval_done_by_hand_on_the_run_page_does_not_run_the_tool(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r_13"}), text("Gone.")])
    with serve_live() as live:
        run = pending_run(live, "delete r_13")
        page = await browsing.open(f"{live.url}/console#/runs/{run['id']}")
        card = page.locator("article.approval")
        await card.get_by_label(re.compile("^Done by hand: output")).fill("deleted r_13 by hand")
        await card.get_by_role("button", name="Approve").click()

        await expect(run_status(page)).to_have_text("completed")
        tool_call = page.locator(".tool-call").filter(has_text="delete_record")
        await expect(tool_call.locator(".output")).to_have_text("deleted r_13 by hand")
        with api(live) as client:
            finished = client.get(f"/runs/{run['id']}").json()
        assert finished["decisions"][0]["output"] == "deleted r_13 by hand"
        assert finished["steps"][0]["tool_calls"][0]["output"] == "deleted r_13 by hand"


GUARDED = "tests.api.guarded_agents"


def guarded_run(live: Live, words: str) -> dict[str, Any]:
    """A run of tests/api/guarded_agents.py's `support`, parked by one of its guardrails."""
    with api(live) as client:
        response = client.post(
            "/runs", params={"wait": 10}, json={"agent": "support", "input": words}
        )
    run: dict[str, Any] = response.json()
    assert run["status"] == "pending_approval", run
    return run


async def test_a_guardrail_s_question_shows_its_reason_in_the_inbox_and_approving_goes_on(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script("m", [text("Refund sent.")])
    with serve_live(agents_module=GUARDED) as live:
        run = guarded_run(live, "refund order 7")
        page = await browsing.open(f"{live.url}/console")
        card = card_of(page, run["id"])
        await expect(
            card.get_by_role("heading", name=re.compile(r"^Guardrail screen_input \(input\)"))
        ).to_be_visible()
        await expect(card.locator(".why")).to_have_text(
            "Guardrail screen_input (input) asks: refunds need a person's eye"
        )
        await expect(card.locator(".context")).to_contain_text("refund order 7")
        # A yes or no: no call's arguments to edit, no output to give, nothing to remember.
        await expect(card.locator("textarea")).to_have_count(0)
        await expect(card.get_by_role("checkbox")).to_have_count(0)
        await expect(card.locator(".held")).to_have_count(0)

        await card.get_by_label(re.compile("^Reason")).fill("order checked")
        await card.get_by_role("button", name="Approve").click()
        await expect(card.locator(".outcome")).to_contain_text("Approved")
        await expect(page.locator("#announcer")).to_have_text(
            "Approved guardrail screen_input (input) for agent support."
        )

        await card.get_by_role("link", name=run["id"]).click()
        await expect(run_status(page)).to_have_text("completed")
        await expect(page.locator(".final")).to_have_text("Refund sent.")
        ask = page.locator(".guardrail-ask")
        await expect(ask.locator(".heading")).to_have_text(
            "Guardrail screen_input (input) asks a person approved"
        )
        await expect(ask.locator(".reason")).to_have_text("refunds need a person's eye")
        await expect(ask.locator(".verdict")).to_have_text(
            re.compile(r"^Approved by a person at .+, after waiting \d+ s: order checked$")
        )
        await expect(page.locator(".conversation .guardrail")).to_contain_text(
            "Guardrail screen_output (output) passed"
        )
        with api(live) as client:
            decision = client.get(f"/runs/{run['id']}").json()["decisions"][0]
    assert (decision["approved"], decision["reason"]) == (True, "order checked")


async def test_a_guardrail_s_question_rejected_on_the_run_page_fails_the_run(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    with serve_live(agents_module=GUARDED) as live:
        run = guarded_run(live, "refund everything")
        page = await browsing.open(f"{live.url}/console#/runs/{run['id']}")
        card = page.locator("article.approval")
        await expect(card.locator(".why")).to_have_text(
            "Guardrail screen_input (input) asks: refunds need a person's eye"
        )
        await expect(card.locator("textarea")).to_have_count(0)
        ask = page.locator(".guardrail-ask")
        await expect(ask.locator(".status")).to_have_text("pending approval")

        # The person's reason is shown as they typed it: text, never markup.
        await card.get_by_label(re.compile("^Reason")).fill("<b>no</b> receipt")
        await card.get_by_role("button", name="Reject").click()

        await expect(run_status(page)).to_have_text("failed")
        await expect(page.locator(".summary .facts")).to_contain_text(
            "guardrail_tripped: guardrail 'screen_input' (input) asked a person, who rejected "
            "it: refunds need a person's eye (decision: <b>no</b> receipt)"
        )
        await expect(ask.locator(".status")).to_have_text("rejected")
        await expect(ask.locator(".verdict")).to_have_text(
            re.compile(r"^Rejected by a person at .+: <b>no</b> receipt$")
        )
        await expect(page.locator(".conversation .lifecycle").last).to_contain_text(
            "Run failed: guardrail_tripped"
        )
        await expect(page.get_by_role("heading", name="Pending approvals")).to_have_count(0)
        assert await page.locator("main b").count() == 0
        await screenshot(page, "console-guardrail-run.png")
    assert fake.requests_for("m") == []


async def test_an_output_guardrail_s_question_shows_the_answer_it_holds(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script("m", [text("I promise a discount.")])
    with serve_live(agents_module=GUARDED) as live:
        run = guarded_run(live, "any discount?")
        inbox = await browsing.open(f"{live.url}/console")
        card = card_of(inbox, run["id"])
        await expect(card.locator(".why")).to_have_text(
            "Guardrail screen_output (output) asks: the answer makes a promise"
        )
        await expect(card.locator(".held")).to_contain_text("I promise a discount.")
        await screenshot(inbox, "console-guardrail.png")

        page = await browsing.open(f"{live.url}/console#/runs/{run['id']}")
        card = page.locator("article.approval")
        await expect(card.locator(".held")).to_contain_text("I promise a discount.")
        await card.get_by_role("button", name="Approve").click()
        await expect(run_status(page)).to_have_text("completed")
        await expect(page.locator(".final")).to_have_text("I promise a discount.")
        await expect(page.locator(".conversation .guardrail")).to_contain_text(
            "Guardrail screen_input (input) passed"
        )
        await expect(page.locator(".guardrail-ask .heading")).to_have_text(
            "Guardrail screen_output (output) asks a person approved"
        )


MCP_AGENTS = "tests.api.mcp_agents"


async def test_an_agent_s_mcp_tools_show_their_server_and_a_server_that_is_down_says_why(
    serve_live: LiveFactory, fake: FakeModel, browsing: Browsing
) -> None:
    fake.script("m", [call("delete_row", {"row": 7}), text("Deleted row 7.")])
    with serve_live(agents_module=MCP_AGENTS) as live:
        page = await browsing.open(f"{live.url}/console#/new")
        await page.get_by_label("Agent").select_option("records")
        tools = page.locator(".agent-tools")
        await expect(tools.get_by_role("heading", name="Tools of records")).to_be_visible()
        # Each tool's effect, approval rule and, for an MCP tool, its server.
        await expect(tools.locator("[data-tool] .rules")).to_have_text(
            [
                "read · no approval",
                "read · no approval · from MCP server db",
                "idempotent · no approval · from MCP server db",
                "unsafe · always asks a person · from MCP server db",
            ]
        )
        await expect(tools.locator('[data-tool="delete_row"] .tool-description')).to_have_text(
            "Delete a row for good."
        )
        await expect(tools.locator('[data-server="db"]')).to_have_text("db (stdio) available")
        # The server that cannot be reached says so, and why its tools are missing.
        down = tools.locator('[data-server="down"]')
        await expect(down.locator(".status")).to_have_text("unavailable")
        await expect(down.locator(".why")).to_have_text(
            "Its tools could not be listed: ConnectError: All connection attempts failed"
        )
        await expect(down.locator(".why")).to_be_visible()
        await screenshot(page, "console-mcp-tools.png")

        await page.get_by_label("Input").fill("delete row 7")
        await page.get_by_role("button", name="Start run").click()
        await expect(page).to_have_url(re.compile(r"#/runs/run_\w+$"))
        run_id = page.url.rsplit("/", 1)[1]
        await expect(run_status(page)).to_have_text("pending approval")

        # The inbox card says which server the tool is of, beside its effect and rule.
        inbox = await browsing.open(f"{live.url}/console")
        card = card_of(inbox, run_id)
        await expect(card.locator(".effect")).to_have_text(
            "Effect: unsafe: it changes something; running it twice may do it twice"
        )
        await expect(card.locator(".origin")).to_have_text("From: MCP server db")
        await expect(card.locator(".why")).to_have_text(
            "Why approval is needed: every call of this tool needs a person's approval."
        )
        await card.get_by_role("button", name="Approve").click()
        await expect(card.locator(".outcome")).to_contain_text("Approved")

        # Approved, the call ran on the MCP server; the run page shows its result.
        await expect(run_status(page)).to_have_text("completed")
        tool_call = page.locator(".tool-call").filter(has_text="delete_row")
        await expect(tool_call.locator(".output")).to_have_text("deleted row 7")
        await expect(page.locator(".final")).to_have_text("Deleted row 7.")
