"""Guardrails over HTTP: a trip fails the run before the model is called, an ask parks it in
the inbox with its reason until a person decides, and a run handed over mid-check goes on."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import jwt
import pytest
from pydantic import SecretStr

from app.settings import Settings
from app.testing import FakeModel, text
from tests.api import guarded_agents
from tests.api.conftest import Client, ClientFactory, Receiver, client_factory, rested
from tests.api.test_durability import stored_events

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
SECRET = "a-guardrail-hs256-secret-of-32-bytes!"
ASK_ID = "guardrail_input_screen_input"


@pytest.fixture
def make_guarded(settings: Settings) -> ClientFactory:
    guarded_agents.reset()
    return client_factory(settings, "tests.api.guarded_agents")


@pytest.fixture
async def client(make_guarded: ClientFactory) -> AsyncIterator[Client]:
    async with make_guarded() as client:
        yield client


async def start(client: Client, words: str, **body: Any) -> dict[str, Any]:
    response = await client.post(
        "/runs", params={"wait": 10}, json={"agent": "support", "input": words, **body}
    )
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


async def checks(client: Client, run_id: str) -> list[dict[str, Any]]:
    return [e.data for e in await stored_events(client, run_id) if e.name == "guardrail.checked"]


async def test_a_tripped_input_guardrail_fails_the_run_and_the_model_is_never_called(
    client: Client, fake: FakeModel
) -> None:
    fake.script("m", [text("never sent")])

    run = await start(client, "my password is hunter2")

    assert run["status"] == "failed"
    assert run["error"] == {
        "code": "guardrail_tripped",
        "message": "guardrail 'screen_input' (input) tripped: the input holds a password",
    }
    assert fake.requests_for("m") == []
    assert run["messages"] == [{"role": "user", "content": "my password is hunter2"}]
    assert await checks(client, run["id"]) == [
        {
            "name": "screen_input",
            "stage": "input",
            "result": "tripped",
            "reason": "the input holds a password",
        }
    ]


async def test_an_ask_shows_in_the_inbox_with_its_reason_and_approval_goes_on(
    client: Client, fake: FakeModel
) -> None:
    fake.script("m", [text("Refund sent.")])

    run = await start(client, "refund order 7")

    assert run["status"] == "pending_approval"
    assert fake.requests_for("m") == []
    assert run["pending_approvals"] == [
        {
            "call_id": ASK_ID,
            "tool": "screen_input",
            "arguments": {},
            "agent": "support",
            "in_doubt": False,
            "kind": "guardrail",
            "reason": "refunds need a person's eye",
        }
    ]
    inbox = (await client.get("/approvals", params={"kind": "guardrail"})).json()["items"]
    assert [(i["run_id"], i["call_id"], i["kind"]) for i in inbox] == [
        (run["id"], ASK_ID, "guardrail")
    ]
    assert inbox[0]["reason"] == "refunds need a person's eye"
    assert inbox[0]["last_messages"] == [{"role": "user", "content": "refund order 7"}]
    assert (await client.get("/approvals", params={"kind": "approval"})).json()["items"] == []

    decided = await client.post(
        f"/runs/{run['id']}/approvals",
        params={"wait": 10},
        json={"decisions": [{"call_id": ASK_ID, "approved": True, "reason": "order checked"}]},
    )

    assert decided.status_code == 200, decided.text
    finished = decided.json()
    assert (finished["status"], finished["final_output"]) == ("completed", "Refund sent.")
    assert len(fake.requests_for("m")) == 1
    [decision] = finished["decisions"]
    assert (decision["call_id"], decision["approved"], decision["reason"]) == (
        ASK_ID,
        True,
        "order checked",
    )
    assert [(c["stage"], c["result"]) for c in await checks(client, run["id"])] == [
        ("input", "ask_human"),
        ("output", "passed"),
    ]
    listed = (await client.get("/approvals", params={"status": "decided"})).json()["items"]
    assert listed[0]["decision"]["reason"] == "order checked"
    names = [e.name for e in await stored_events(client, run["id"])]
    assert names.index("approval.requested") < names.index("approval.decided")


async def test_a_rejected_ask_fails_the_run_with_the_guardrail_s_reason(
    client: Client, fake: FakeModel
) -> None:
    run = await start(client, "refund everything")

    decided = await client.post(
        f"/runs/{run['id']}/approvals",
        params={"wait": 10},
        json={"decisions": [{"call_id": ASK_ID, "approved": False, "reason": "no"}]},
    )

    finished = decided.json()
    assert finished["status"] == "failed"
    assert finished["error"] == {
        "code": "guardrail_tripped",
        "message": "guardrail 'screen_input' (input) asked a person, who rejected it: refunds "
        "need a person's eye (decision: no)",
    }
    assert fake.requests_for("m") == []
    assert (await client.get("/approvals", params={"status": "pending"})).json()["items"] == []


@pytest.mark.parametrize(
    "extra",
    [{"output": "done by hand"}, {"arguments": {"x": 1}}, {"remember": True}],
)
async def test_a_decision_on_an_ask_takes_nothing_but_yes_or_no(
    client: Client, fake: FakeModel, extra: dict[str, Any]
) -> None:
    run = await start(client, "refund it")

    decided = await client.post(
        f"/runs/{run['id']}/approvals",
        json={"decisions": [{"call_id": ASK_ID, "approved": True, **extra}]},
    )

    assert decided.status_code == 422
    assert decided.headers["content-type"] == PROBLEM
    assert "its decision takes approved and a reason" in decided.json()["detail"]
    again = (await client.get(f"/runs/{run['id']}")).json()
    assert again["status"] == "pending_approval"
    assert again["decisions"] == []


async def test_an_output_ask_holds_the_answer_until_a_person_approves(
    client: Client, fake: FakeModel
) -> None:
    fake.script("m", [text("I promise a discount.")])

    run = await start(client, "any discount?")

    assert run["status"] == "pending_approval"
    assert run["final_output"] is None
    [item] = run["pending_approvals"]
    assert (item["call_id"], item["reason"]) == (
        "guardrail_output_screen_output",
        "the answer makes a promise",
    )
    # The person sees the answer in question.
    assert run["messages"][-1] == {"role": "assistant", "content": "I promise a discount."}
    inbox = (await client.get("/approvals")).json()["items"]
    assert inbox[0]["last_messages"][-1]["content"] == "I promise a discount."

    decided = await client.post(
        f"/runs/{run['id']}/approvals",
        params={"wait": 10},
        json={"decisions": [{"call_id": item["call_id"], "approved": True}]},
    )

    finished = decided.json()
    assert (finished["status"], finished["final_output"]) == ("completed", "I promise a discount.")
    assert len(fake.requests_for("m")) == 1


async def test_a_tripped_output_guardrail_fails_the_run(client: Client, fake: FakeModel) -> None:
    fake.script("m", [text("a rude answer")])

    run = await start(client, "hello")

    assert run["status"] == "failed"
    assert run["error"]["message"] == "guardrail 'screen_output' (output) tripped"
    assert run["final_output"] is None


async def test_output_guardrails_get_a_run_s_structured_value(
    client: Client, fake: FakeModel
) -> None:
    schema = {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"]}
    fake.script("m", [text('{"note": "we promise"}')])

    run = await start(client, "note it", output_schema=schema)

    assert run["status"] == "pending_approval"
    assert guarded_agents.checks_seen[-1][:2] == ("screen_output", {"note": "we promise"})
    decided = await client.post(
        f"/runs/{run['id']}/approvals",
        params={"wait": 10},
        json={"decisions": [{"call_id": "guardrail_output_screen_output", "approved": True}]},
    )
    assert decided.json()["final_output"] == {"note": "we promise"}


async def test_guardrails_see_the_caller_and_an_ask_is_decided_by_its_approvers(
    make_guarded: ClientFactory, fake: FakeModel
) -> None:
    def bearer(*roles: str) -> dict[str, str]:
        claims = {"sub": "lee", "tenant": "acme", "roles": list(roles), "exp": time.time() + 600}
        return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}

    fake.script("m", [text("Refund sent.")])
    async with make_guarded(jwt_secret=SecretStr(SECRET)) as client:
        created = await client.post(
            "/runs",
            params={"wait": 10},
            json={"agent": "support", "input": "refund order 8"},
            headers=bearer(),
        )
        run = created.json()
        assert run["status"] == "pending_approval"
        [(_, _, principal)] = guarded_agents.checks_seen
        assert (principal.name, principal.tenant) == ("lee", "acme")

        body = {"decisions": [{"call_id": ASK_ID, "approved": True}]}
        url = f"/runs/{run['id']}/approvals"
        refused = await client.post(url, json=body, headers=bearer("approver:delete_record"))
        assert refused.status_code == 403
        assert refused.headers["content-type"] == PROBLEM
        allowed = await client.post(
            url, params={"wait": 10}, json=body, headers=bearer("approver:screen_input")
        )
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["status"] == "completed"
        assert allowed.json()["decisions"][0]["decided_by"] == "lee"


async def test_a_guardrail_s_park_fires_the_webhook_with_its_item(
    make_guarded: ClientFactory, fake: FakeModel, receiver: Receiver
) -> None:
    async with make_guarded(webhook_allowed_hosts="127.0.0.1") as client:
        run = await start(client, "refund it", webhook=receiver.url)
        assert run["status"] == "pending_approval"
        assert await anyio.to_thread.run_sync(receiver.wait_for, 1)

    [(_, raw)] = receiver.received
    body = json.loads(raw)
    assert body["event"] == "run.pending_approval"
    [item] = body["run"]["pending_approvals"]
    assert (item["kind"], item["reason"]) == ("guardrail", "refunds need a person's eye")


async def test_agents_list_their_guardrails(client: Client) -> None:
    agent = (await client.get("/agents/support")).json()

    assert agent["input_guardrails"] == ["screen_input"]
    assert agent["output_guardrails"] == ["screen_output"]


async def test_a_run_handed_over_mid_output_check_checks_the_same_answer_again(
    make_guarded: ClientFactory, fake: FakeModel
) -> None:
    """The answer is stored before its check: the process that takes the run over checks it
    again and completes it, without asking the model for another."""
    fake.script("m", [text("a slow answer")])
    async with make_guarded() as client:
        run = (await client.post("/runs", json={"agent": "support", "input": "hi"})).json()
        with anyio.fail_after(10):
            await guarded_agents.review_started.wait()
    # That process stopped mid-check; the check is quick in the next one.
    guarded_agents.review_released.set()
    async with make_guarded() as client:
        finished = await rested(client, run["id"])
        events = await stored_events(client, run["id"])

    assert (finished["status"], finished["final_output"]) == ("completed", "a slow answer")
    assert len(fake.requests_for("m")) == 1
    outputs = [seen for name, seen, _ in guarded_agents.checks_seen if name == "screen_output"]
    assert outputs == ["a slow answer", "a slow answer"]
    assert [e.data["result"] for e in events if e.name == "guardrail.checked"] == [
        "passed",  # the input, checked once before the model was called
        "passed",  # the output, by the process that took the run over
    ]
    assert [e.name for e in events].count("message") == 2  # the input and the one answer
