"""Webhooks: signed, retried, only to allowed hosts and addresses, never holding a run.

Contract, "Operating it": each time a run rests the service POSTs `{"event", "run"}` with
`Webhook-Id` and `Webhook-Signature: t=..,v1=<HMAC-SHA256 of "t.body">`; attempts show in the
run's `webhook_deliveries`; only WEBHOOK_ALLOWED_HOSTS are called, none set means 422.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import structlog
from pydantic import SecretStr

from app.testing import FakeModel, call, text
from app.webhooks.policy import WebhookPolicy, WebhookRefused, _public
from tests.api.conftest import Client, ClientFactory, LiveFactory, Receiver, rested

pytestmark = pytest.mark.anyio

SECRET = "whsec-test-0123456789"
PROBLEM = "application/problem+json"


@pytest.fixture
async def hooked(make_client: ClientFactory) -> AsyncIterator[Client]:
    async with make_client(
        webhook_allowed_hosts="127.0.0.1",
        webhook_secret=SecretStr(SECRET),
        webhook_retry_seconds=0.05,
        webhook_max_attempts=3,
    ) as client:
        yield client


async def deliveries_once(
    client: Client, run_id: str, done: str = "delivered"
) -> list[dict[str, Any]]:
    """The run's deliveries once none is pending any more (bounded). The sender records a try
    after the receiver answered, in its own process, with no event a client can await."""
    with anyio.fail_after(10):
        while True:
            shown: list[dict[str, Any]] = (await client.get(f"/runs/{run_id}")).json()[
                "webhook_deliveries"
            ]
            if shown and all(d["status"] == done for d in shown):
                return shown
            await anyio.sleep(0.02)


async def delivered(receiver: Receiver, count: int) -> list[tuple[dict[str, str], Any]]:
    assert await anyio.to_thread.run_sync(receiver.wait_for, count)
    return [(headers, json.loads(body)) for headers, body in receiver.received]


def verify(headers: dict[str, str], body: bytes) -> None:
    fields = dict(part.split("=", 1) for part in headers["webhook-signature"].split(","))
    expected = hmac.new(
        SECRET.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)


async def test_each_rest_is_delivered_signed_and_shown_on_the_run(
    hooked: Client, fake: FakeModel, receiver: Receiver
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("done")])
    with structlog.testing.capture_logs() as logs:
        parked = await hooked.post(
            "/runs",
            params={"wait": 10},
            json={"agent": "calc", "input": "clean up", "webhook": receiver.url},
        )
        run = parked.json()
        assert run["status"] == "pending_approval"
        assert run["webhook"] == receiver.url
        await delivered(receiver, 1)
        call_id = run["pending_approvals"][0]["call_id"]
        await hooked.post(
            f"/runs/{run['id']}/approvals",
            json={"decisions": [{"call_id": call_id, "approved": True}]},
        )
        await rested(hooked, run["id"])
        bodies = await delivered(receiver, 2)

    assert [body["event"] for _, body in bodies] == ["run.pending_approval", "run.completed"]
    assert [body["run"]["status"] for _, body in bodies] == ["pending_approval", "completed"]
    assert bodies[1][1]["run"]["final_output"] == "done"
    assert "webhook_deliveries" not in bodies[1][1]["run"]
    for headers, raw in receiver.received:
        assert headers["content-type"] == "application/json"
        verify(headers, raw)
    ids = [headers["webhook-id"] for headers, _ in bodies]
    assert len(set(ids)) == 2

    shown = await deliveries_once(hooked, run["id"])
    assert [(d["id"], d["event"]) for d in shown] == list(
        zip(ids, ["run.pending_approval", "run.completed"], strict=True)
    )
    assert all(len(d["attempts"]) == 1 for d in shown)
    assert shown[0]["attempts"][0]["status_code"] == 204
    assert not any(SECRET in repr(entry) for entry in logs)


async def test_a_failing_receiver_is_retried_and_never_holds_the_run(
    hooked: Client, fake: FakeModel, receiver: Receiver
) -> None:
    receiver.fail = 2
    fake.script("m", [text("done")])
    done = await hooked.post(
        "/runs",
        params={"wait": 10},
        json={"agent": "calc", "input": "x", "webhook": receiver.url},
    )
    assert done.json()["status"] == "completed"  # before any delivery went through
    [(headers, body)] = await delivered(receiver, 1)
    assert body["event"] == "run.completed"
    run_id = done.json()["id"]

    [delivery] = await deliveries_once(hooked, run_id)
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 204]
    assert delivery["id"] == headers["webhook-id"]  # the same id on every try


async def test_a_receiver_that_never_answers_well_is_given_up(
    hooked: Client, fake: FakeModel, receiver: Receiver
) -> None:
    receiver.fail = 100
    fake.script("m", [text("done")])
    run = (
        await hooked.post(
            "/runs",
            params={"wait": 10},
            json={"agent": "calc", "input": "x", "webhook": receiver.url},
        )
    ).json()

    [delivery] = await deliveries_once(hooked, run["id"], "failed")
    assert len(delivery["attempts"]) == 3  # WEBHOOK_MAX_ATTEMPTS
    assert delivery["next_attempt_at"] is None


@pytest.mark.parametrize(
    ("allowed", "url", "reason"),
    [
        ("", "http://127.0.0.1:9/hook", "calls no webhooks"),
        ("hooks.example.com", "http://127.0.0.1:9/hook", "not in WEBHOOK_ALLOWED_HOSTS"),
        ("hooks.example.com", "https://evil.example.com/hook", "not in WEBHOOK_ALLOWED_HOSTS"),
        ("*.example.com", "ftp://hooks.example.com/hook", "http or https"),
        ("hooks.example.com", "https://user:pw@hooks.example.com/", "no credentials"),
        ("127.0.0.1", "http://[::1", "not a valid URL"),
        ("127.0.0.1", "http://127.0.0.1:99999/hook", "not a valid URL"),
        ("127.0.0.1", "http://127.0.0.1/a\tb", "no spaces or control characters"),
    ],
)
async def test_a_webhook_the_service_will_not_call_is_refused_at_creation(
    make_client: ClientFactory, allowed: str, url: str, reason: str
) -> None:
    async with make_client(
        webhook_allowed_hosts=allowed, webhook_secret=SecretStr(SECRET)
    ) as client:
        response = await client.post("/runs", json={"agent": "calc", "input": "x", "webhook": url})
        assert (await client.get("/runs")).json()["items"] == []
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert reason in response.json()["detail"]
    assert response.json()["errors"][0]["loc"] == ["body", "webhook"]


async def test_an_allowed_name_that_resolves_to_a_private_address_is_never_called(
    make_client: ClientFactory, fake: FakeModel, receiver: Receiver
) -> None:
    fake.script("m", [text("done")])
    private = receiver.url.replace("127.0.0.1", "localhost")
    async with make_client(
        webhook_allowed_hosts="localhost",
        webhook_secret=SecretStr(SECRET),
        webhook_retry_seconds=0.05,
        webhook_max_attempts=2,
    ) as client:
        run = (
            await client.post(
                "/runs",
                params={"wait": 10},
                json={"agent": "calc", "input": "x", "webhook": private},
            )
        ).json()
        [delivery] = await deliveries_once(client, run["id"], "failed")

    assert receiver.answered == 0
    # The reason, with the address DNS gave, is in the log; the run shows no internal address.
    assert all(a["error"].startswith("refused") for a in delivery["attempts"])
    assert not any("127.0.0.1" in a["error"] for a in delivery["attempts"])
    assert all(a["status_code"] is None for a in delivery["attempts"])


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "169.254.169.254",
        "::1",
        "fd00::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "::7f00:1",  # IPv4-compatible 127.0.0.1
    ],
)
def test_addresses_that_carry_a_private_one_are_not_public(address: str) -> None:
    assert not _public(ipaddress.ip_address(address))


def test_public_addresses_are_public() -> None:
    assert _public(ipaddress.ip_address("93.184.216.34"))
    assert _public(ipaddress.ip_address("2606:4700::1111"))


async def test_a_backlog_larger_than_the_sender_s_slots_leaves_the_service_answering(
    serve_live: LiveFactory, fake: FakeModel, receiver: Receiver
) -> None:
    receiver.delay = 0.3  # every slot busy for a while
    fake.script("m", [text("done")])
    hooks = {
        "webhook_allowed_hosts": "127.0.0.1",
        "webhook_secret": SecretStr(SECRET),
    }

    def backlog(url: str) -> None:
        # The server runs in a thread of its own: a frozen event loop there shows here as a
        # request that times out, not as a test that hangs.
        with httpx.Client(base_url=url, timeout=5) as http:
            body = {"agent": "calc", "input": "x", "webhook": receiver.url}
            for _ in range(12):  # more deliveries than the sender's 8 slots
                assert http.post("/runs", json=body).status_code == 201
            assert receiver.wait_for(1)
            assert http.get("/healthz").status_code == 200  # while every slot is busy
            assert receiver.wait_for(12, timeout=20)

    with serve_live(**hooks) as live:
        await anyio.to_thread.run_sync(backlog, live.url)


def test_hosts_are_allowed_as_they_go_on_the_wire() -> None:
    policy = WebhookPolicy("xn--fa-hia.de, [::1]")
    policy.check_url("https://xn--fa-hia.de/hook")
    policy.check_url("https://faß.de/hook")  # the same name on the wire
    policy.check_url("http://[::1]:8080/hook")
    with pytest.raises(WebhookRefused, match=r"'fass\.de' is not in"):
        policy.check_url("https://fass.de/hook")  # another name IDNA 2003 would map it to


async def test_a_structured_output_is_delivered_as_its_json_value(
    hooked: Client, fake: FakeModel, receiver: Receiver
) -> None:
    fake.script("m", [text('{"total": 2}')])
    schema = {"type": "object", "properties": {"total": {"type": "integer"}}}
    body = {"agent": "calc", "input": "1+1", "webhook": receiver.url, "output_schema": schema}
    run = (await hooked.post("/runs", json=body)).json()

    [(_, delivery)] = await delivered(receiver, 1)

    assert delivery["event"] == "run.completed"
    assert delivery["run"]["id"] == run["id"]
    assert delivery["run"]["final_output"] == {"total": 2}


async def test_a_run_parked_on_a_call_the_client_runs_is_delivered(
    hooked: Client, fake: FakeModel, receiver: Receiver
) -> None:
    fake.script("m", [call("take_photo", {"subject": "cat"}), text("nice cat")])
    run = (
        await hooked.post(
            "/runs",
            params={"wait": 10},
            json={"agent": "calc", "input": "photo", "webhook": receiver.url},
        )
    ).json()
    [(_, parked)] = await delivered(receiver, 1)
    assert parked["event"] == "run.pending_approval"
    [pending] = parked["run"]["pending_approvals"]
    assert (pending["kind"], pending["tool"]) == ("external", "take_photo")

    decision = {"call_id": pending["call_id"], "approved": True, "output": "cat.jpg"}
    await hooked.post(f"/runs/{run['id']}/approvals", json={"decisions": [decision]})
    await rested(hooked, run["id"])
    bodies = await delivered(receiver, 2)

    assert bodies[1][1]["event"] == "run.completed"
    assert bodies[1][1]["run"]["decisions"][0]["output"] == "cat.jpg"
