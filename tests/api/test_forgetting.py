"""Forgetting data (contract, "Data lifecycle"): `DELETE /runs/{id}` takes an ended run and
everything of it in one transaction, and refuses one that has not ended."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from app.store.models import (
    Approval,
    IdempotencyKey,
    RunMessage,
    RunStep,
    StoredEvent,
    WebhookDelivery,
)
from app.testing import FakeModel, Rule, Script, call, text
from tests.api.conftest import Client, ClientFactory, Receiver, services_of
from tests.api.test_webhooks import deliveries_once

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
SCRIPT = Script(
    rules=[
        Rule(match="^park", replies=[call("delete_record", {"record_id": "r1"}), text("done")]),
        Rule(replies=[text("ok")]),
    ]
)
OF_A_RUN = (RunMessage, RunStep, StoredEvent, Approval, WebhookDelivery, IdempotencyKey)


async def rows_of(client: Client, run_id: str) -> dict[str, int]:
    """How many rows of each table belong to the run."""
    async with services_of(client).db.session_scope() as session:
        return {
            table.__tablename__: int(
                await session.scalar(
                    select(func.count()).select_from(table).where(table.run_id == run_id)
                )
                or 0
            )
            for table in OF_A_RUN
        }


async def test_an_ended_run_is_forgotten_with_everything_of_it(
    make_client: ClientFactory, fake: FakeModel, receiver: Receiver
) -> None:
    fake.script("m", SCRIPT)
    webhooks: dict[str, Any] = {
        "webhook_allowed_hosts": "127.0.0.1",
        "webhook_secret": SecretStr("whsec-test-0123456789"),
    }
    async with make_client(**webhooks) as client:
        body = {"agent": "calc", "input": "park", "session_id": "s1", "webhook": receiver.url}
        first = {"Idempotency-Key": "create-1"}
        parked = (await client.post("/runs", params={"wait": 10}, json=body, headers=first)).json()
        run_id = parked["id"]
        decision = {
            "decisions": [{"call_id": parked["pending_approvals"][0]["call_id"], "approved": True}]
        }
        decided = await client.post(
            f"/runs/{run_id}/approvals",
            params={"wait": 10},
            json=decision,
            headers={"Idempotency-Key": "decide-1"},
        )
        assert decided.json()["status"] == "completed", decided.text
        await deliveries_once(client, run_id)
        kept = await client.post(
            "/runs", params={"wait": 10}, json={"agent": "calc", "input": "hi", "session_id": "s1"}
        )
        kept_id = kept.json()["id"]
        before = await rows_of(client, run_id)
        assert all(before.values()), before
        kept_rows = await rows_of(client, kept_id)
        history = (await client.get("/sessions/s1")).json()["messages"]

        deleted = await client.delete(f"/runs/{run_id}")
        assert deleted.status_code == 204, deleted.text
        assert deleted.content == b""

        assert await rows_of(client, run_id) == dict.fromkeys(before, 0)
        for path in (f"/runs/{run_id}", f"/runs/{run_id}/events"):
            assert (await client.get(path)).status_code == 404, path
        again = await client.delete(f"/runs/{run_id}")
        assert (again.status_code, again.headers["content-type"]) == (404, PROBLEM)
        listed = (await client.get("/runs")).json()["items"]
        assert [run["id"] for run in listed] == [kept_id]
        every = (await client.get("/approvals", params={"status": "all"})).json()["items"]
        assert every == []
        # The session keeps its conversation, the forgotten run's messages included; the
        # other run keeps everything of its own.
        assert (await client.get("/sessions/s1")).json()["messages"] == history
        assert await rows_of(client, kept_id) == kept_rows
        # Its idempotency key is forgotten with it: the same request makes a new run.
        repeat = await client.post("/runs", json=body, headers=first)
        assert repeat.status_code == 201
        assert repeat.json()["id"] != run_id


async def test_a_run_that_has_not_ended_is_refused_until_it_ends(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", SCRIPT)
    async with make_client() as client:
        parked = (
            await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "park"})
        ).json()
        assert parked["status"] == "pending_approval"
        refused = await client.delete(f"/runs/{parked['id']}")
        assert (refused.status_code, refused.headers["content-type"]) == (409, PROBLEM)
        assert refused.json()["type"].endswith("/run-not-ended")
        assert "pending_approval" in refused.json()["detail"]
        assert (await client.get(f"/runs/{parked['id']}")).json()["status"] == "pending_approval"
        assert (await client.post(f"/runs/{parked['id']}/cancel")).status_code == 202
        assert (await client.delete(f"/runs/{parked['id']}")).status_code == 204
    async with make_client(with_executor=False) as client:
        queued = (await client.post("/runs", json={"agent": "calc", "input": "hi"})).json()
        refused = await client.delete(f"/runs/{queued['id']}")
        assert refused.status_code == 409
        assert (await client.get(f"/runs/{queued['id']}")).json()["status"] == "queued"


async def test_a_session_is_forgotten_with_its_runs_when_asked(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", SCRIPT)
    async with make_client() as client:

        async def run(session_id: str, text_input: str = "hi") -> str:
            body = {"agent": "calc", "input": text_input, "session_id": session_id}
            created = await client.post("/runs", params={"wait": 10}, json=body)
            return str(created.json()["id"])

        first, second, other = await run("s1"), await run("s1"), await run("s2")
        kept = await run("s3")
        # A session forgotten alone leaves its runs.
        assert (await client.delete("/sessions/s3")).status_code == 204
        assert (await client.get(f"/runs/{kept}")).status_code == 200

        parked = await run("s1", "park")
        busy = await client.delete("/sessions/s1", params={"forget_runs": True})
        assert busy.status_code == 409
        assert (await client.get(f"/runs/{first}")).status_code == 200
        assert (await client.post(f"/runs/{parked}/cancel")).status_code == 202

        forgotten = await client.delete("/sessions/s1", params={"forget_runs": True})
        assert forgotten.status_code == 204, forgotten.text
        for run_id in (first, second, parked):
            assert (await client.get(f"/runs/{run_id}")).status_code == 404
            assert await rows_of(client, run_id) == dict.fromkeys(
                (table.__tablename__ for table in OF_A_RUN), 0
            )
        assert (await client.get("/sessions/s1")).status_code == 404
        assert (await client.get(f"/runs/{other}")).status_code == 200
        assert (await client.get("/sessions/s2")).status_code == 200


async def test_an_admin_erases_a_tenant_and_nothing_of_another(
    make_client: ClientFactory, fake: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches of two: the erasure takes several transactions.
    monkeypatch.setattr("app.services.runs.ERASURE_BATCH", 2)
    fake.script("m", SCRIPT)
    keys: dict[str, Any] = {
        "api_keys": SecretStr("acme/ui:acme-key-0123456789, globex/ui:globex-key-0123456789"),
        "admin_api_keys": SecretStr("ops/root:root-key-0123456789"),
    }
    acme, globex = bearer("acme-key-0123456789"), bearer("globex-key-0123456789")
    admin = bearer("root-key-0123456789")
    async with make_client(**keys) as client:

        async def run(headers: dict[str, str], session_id: str, text_input: str = "hi") -> str:
            body = {"agent": "calc", "input": text_input, "session_id": session_id}
            created = await client.post("/runs", params={"wait": 10}, json=body, headers=headers)
            return str(created.json()["id"])

        acme_runs = [await run(acme, f"s{i % 3}") for i in range(5)]
        globex_runs = [await run(globex, "s0") for _ in range(2)]
        unbound = {"agent": "no-such-agent", "input": "x"}
        refused = await client.post(
            "/runs", json=unbound, headers={**acme, "Idempotency-Key": "k-refused"}
        )
        assert refused.status_code == 422
        parked = await run(acme, "s9", "park")

        assert (await client.delete("/tenants/acme", headers=acme)).status_code == 403
        assert (await client.delete("/tenants/acme")).status_code == 401
        assert (await client.delete("/tenants/no such", headers=admin)).status_code == 422
        busy = await client.delete("/tenants/acme", headers=admin)
        assert busy.status_code == 409
        assert busy.json()["type"].endswith("/run-not-ended")
        assert (await client.get(f"/runs/{acme_runs[0]}", headers=acme)).status_code == 200

        assert (await client.post(f"/runs/{parked}/cancel", headers=acme)).status_code == 202
        erased = await client.delete("/tenants/acme", headers=admin)
        assert erased.status_code == 200, erased.text
        counts = erased.json()
        assert (counts["tenant"], counts["runs"], counts["sessions"]) == ("acme", 6, 4)
        assert (await client.get("/runs", headers=acme)).json()["items"] == []
        for session_id in ("s0", "s1", "s2", "s9"):
            gone = await client.get(f"/sessions/{session_id}", headers=acme)
            assert gone.status_code == 404
        theirs = (await client.get("/runs", headers=globex)).json()["items"]
        assert {item["id"] for item in theirs} == set(globex_runs)
        assert (await client.get("/sessions/s0", headers=globex)).status_code == 200
        # Done already: a repeat finds nothing more.
        again = (await client.delete("/tenants/acme", headers=admin)).json()
        assert (again["runs"], again["sessions"], again["idempotency_keys"]) == (0, 0, 0)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
