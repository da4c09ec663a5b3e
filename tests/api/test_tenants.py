"""Tenants own their rows (contract, "Tenants and principals"): another tenant's run, session,
approval request or idempotency key is not there for a caller; admins act across tenants;
`TENANT_MAX_ACTIVE_RUNS` bounds a tenant's queue; the queue goes round the tenants; and the
run's creator reaches its tools as `ctx.principal`."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from app.services.lifecycle import now
from app.store.leases import Leases
from app.testing import FakeModel, call, text
from tests.api import agents as test_agents
from tests.api.conftest import Client, ClientFactory, services_of

pytestmark = pytest.mark.anyio

ACME, GLOBEX, ROOT = "key-of-acme-0123456789", "key-of-globex-0123456789", "key-of-root-0123456789"
GLOBEX_LEAD = "key-of-globex-lead-0123456789"
KEYS: dict[str, Any] = {
    "api_keys": SecretStr(f"acme/ui:{ACME}, globex/ui:{GLOBEX}"),
    "approver_api_keys": SecretStr(f"globex/lead:{GLOBEX_LEAD}"),
    "admin_api_keys": SecretStr(f"ops/root:{ROOT}"),
}


def as_(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def parked_run(client: Client, fake: FakeModel, key: str, session: str) -> dict[str, Any]:
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("done")])
    body = {"agent": "calc", "input": "x", "session_id": session}
    created = await client.post("/runs", params={"wait": 10}, json=body, headers=as_(key))
    run: dict[str, Any] = created.json()
    assert run["status"] == "pending_approval", run
    return run


async def test_another_tenants_run_session_and_approvals_are_not_there(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    async with make_client(**KEYS) as client:
        run = await parked_run(client, fake, ACME, "s1")
        assert (run["tenant"], run["created_by"]) == ("acme", "ui")
        run_id, other = run["id"], as_(GLOBEX)
        call_id = run["pending_approvals"][0]["call_id"]
        decision = {"decisions": [{"call_id": call_id, "approved": True}]}
        unknown = (await client.get("/runs/run_unknown", headers=other)).json()

        for method, path, body, key in [
            ("GET", f"/runs/{run_id}", None, GLOBEX),
            ("POST", f"/runs/{run_id}/cancel", None, GLOBEX),
            ("GET", f"/runs/{run_id}/events", None, GLOBEX),
            # An approver decides its own tenant's calls only.
            ("POST", f"/runs/{run_id}/approvals", decision, GLOBEX_LEAD),
            ("GET", "/sessions/s1", None, GLOBEX),
            ("DELETE", "/sessions/s1", None, GLOBEX),
        ]:
            answer = await client.request(method, path, json=body, headers=as_(key))
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["type"] == unknown["type"]
        # Choosing the other tenant does not help one who is not an admin.
        chosen = await client.get(f"/runs/{run_id}", params={"tenant": "acme"}, headers=other)
        assert chosen.status_code == 404
        for path, params in [
            ("/runs", {}),
            ("/runs", {"session_id": "s1"}),
            ("/runs", {"status": "pending_approval", "tenant": "acme"}),
            ("/approvals", {}),
        ]:
            page = await client.get(path, params=params, headers=other)
            assert page.json()["items"] == [], (path, params)

        # The same session id is globex's own: an interrupt there leaves acme's run alone.
        fake.script("m", [text("globex's")])
        again: dict[str, Any] = {
            "agent": "calc",
            "input": "y",
            "session_id": "s1",
            "if_busy": "interrupt",
        }
        mine = await client.post("/runs", params={"wait": 10}, json=again, headers=other)
        assert mine.json()["status"] == "completed"
        session = (await client.get("/sessions/s1", headers=other)).json()
        assert [m["content"] for m in session["messages"]] == ["y", "globex's"]
        still = (await client.get(f"/runs/{run_id}", headers=as_(ACME))).json()
        assert still["status"] == "pending_approval"
        listed = (await client.get("/approvals", headers=as_(ACME))).json()["items"]
        assert [item["run_id"] for item in listed] == [run_id]


async def test_an_admin_acts_across_tenants_and_filters_by_one(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    async with make_client(**KEYS) as client:
        acme = await parked_run(client, fake, ACME, "s1")
        globex = await parked_run(client, fake, GLOBEX, "s1")
        admin = as_(ROOT)
        every = (await client.get("/runs", headers=admin)).json()["items"]
        assert {run["id"] for run in every} == {acme["id"], globex["id"]}
        only = await client.get("/runs", params={"tenant": "globex"}, headers=admin)
        assert [run["id"] for run in only.json()["items"]] == [globex["id"]]
        pending = await client.get("/approvals", params={"tenant": "acme"}, headers=admin)
        assert [item["run_id"] for item in pending.json()["items"]] == [acme["id"]]
        session = await client.get("/sessions/s1", params={"tenant": "globex"}, headers=admin)
        assert session.status_code == 200
        # The admin's own tenant has no session s1.
        assert (await client.get("/sessions/s1", headers=admin)).status_code == 404
        decision = {
            "decisions": [{"call_id": acme["pending_approvals"][0]["call_id"], "approved": True}]
        }
        decided = await client.post(
            f"/runs/{acme['id']}/approvals", params={"wait": 10}, json=decision, headers=admin
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["status"] == "completed"
        bad = await client.get("/runs", params={"tenant": "no such/tenant"}, headers=admin)
        assert bad.status_code == 422


async def test_idempotency_keys_are_per_tenant(make_client: ClientFactory, fake: FakeModel) -> None:
    async with make_client(**KEYS) as client:
        fake.script("m", [text("one"), text("two")])
        body = {"agent": "calc", "input": "same"}
        key = {"Idempotency-Key": "k-1"}
        first = await client.post("/runs", json=body, headers={**as_(ACME), **key})
        second = await client.post("/runs", json=body, headers={**as_(GLOBEX), **key})
        repeat = await client.post("/runs", json=body, headers={**as_(ACME), **key})
        assert (first.status_code, second.status_code, repeat.status_code) == (201, 201, 200)
        assert first.json()["id"] != second.json()["id"]
        assert repeat.json()["id"] == first.json()["id"]


async def test_a_tenant_past_its_active_runs_is_told_to_come_back(
    make_client: ClientFactory,
) -> None:
    async with make_client(with_executor=False, tenant_max_active_runs=2, **KEYS) as client:
        body = {"agent": "calc", "input": "x"}
        for _ in range(2):
            assert (await client.post("/runs", json=body, headers=as_(ACME))).status_code == 201
        refused = await client.post("/runs", json=body, headers=as_(ACME))
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("too-many-runs")
        assert int(refused.headers["Retry-After"]) > 0
        # Another tenant's queue is its own.
        assert (await client.post("/runs", json=body, headers=as_(GLOBEX))).status_code == 201
        # A run that ends makes room.
        queued = (await client.get("/runs", headers=as_(ACME))).json()["items"][0]
        cancelled = await client.post(f"/runs/{queued['id']}/cancel", headers=as_(ACME))
        assert cancelled.status_code == 202
        assert (await client.post("/runs", json=body, headers=as_(ACME))).status_code == 201


async def test_the_queue_goes_round_the_tenants(make_client: ClientFactory) -> None:
    async with make_client(with_executor=False, **KEYS) as client:
        body = {"agent": "calc", "input": "x"}
        noisy = [
            (await client.post("/runs", json=body, headers=as_(ACME))).json()["id"]
            for _ in range(6)
        ]
        quiet = [
            (await client.post("/runs", json=body, headers=as_(GLOBEX))).json()["id"]
            for _ in range(2)
        ]
        db = services_of(client).db
        async with db.session_scope() as session:
            leases = Leases(session)
            first = await leases.claim("w", limit=4, now=now(), lease_seconds=30)
        # The quiet tenant's two runs, posted after six of the noisy one's, are in the first
        # four claimed, each noisy run keeping its own order.
        claimed = [claim.run_id for claim in first]
        assert set(quiet) <= set(claimed)
        assert [run for run in claimed if run in noisy] == noisy[:2]


async def test_tools_instructions_and_handlers_see_the_principal_that_created_the_run(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    async with make_client(**KEYS) as client:
        fake.script("m", [call("add", {"a": 1, "b": 2}), text("3")])
        body = {"agent": "calc", "input": "add"}
        run = await client.post("/runs", params={"wait": 10}, json=body, headers=as_(ACME))
        assert run.json()["status"] == "completed", run.text
        [(seen_by, principal)] = test_agents.principals_seen
        assert seen_by == "tool"
        assert (principal.name, principal.tenant, principal.roles) == ("ui", "acme", frozenset())

        # Resumed by an approver's decision, the run still acts for the one who created it.
        test_agents.principals_seen.clear()
        fake.script("m", [call("delete_record", {"record_id": "r1"}), text("done")])
        body = {"agent": "careful", "input": "delete"}
        parked = await client.post("/runs", params={"wait": 10}, json=body, headers=as_(GLOBEX))
        assert parked.json()["status"] == "pending_approval", parked.text
        call_id = parked.json()["pending_approvals"][0]["call_id"]
        decision = {"decisions": [{"call_id": call_id, "approved": True}]}
        decided = await client.post(
            f"/runs/{parked.json()['id']}/approvals",
            params={"wait": 10},
            json=decision,
            headers=as_(GLOBEX_LEAD),
        )
        assert decided.json()["status"] == "completed", decided.text
        system = fake.requests_for("m")[-1]["messages"][0]
        assert system == {"role": "system", "content": "Delete carefully, for ui."}
    seen = [(by, p.name, p.tenant) for by, p in test_agents.principals_seen]
    assert seen == [
        ("instructions", "ui", "globex"),
        ("approval handler", "ui", "globex"),
        ("instructions", "ui", "globex"),
    ]
