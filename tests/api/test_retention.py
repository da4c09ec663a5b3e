"""Retention (contract, "Data lifecycle"): the executors delete ended runs, idle sessions and
old idempotency keys past their age, a batch at a time, one process at a time, and count them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from app.store.database import try_lock_for_transaction
from app.store.models import IdempotencyKey
from app.testing import FakeModel
from app.worker.retention import LOCK, Purger, RetentionPolicy
from tests.api.conftest import Client, ClientFactory, Receiver, services_of
from tests.api.test_forgetting import OF_A_RUN, SCRIPT, rows_of
from tests.api.test_metrics import scrape, value
from tests.api.test_webhooks import deliveries_once
from tests.conftest import is_postgres

pytestmark = pytest.mark.anyio

DELETED = "agent_runs_retention_deleted_total"
# Sweeps of the executor's own, for the tests that call `sweep` themselves: one at start only.
NO_SWEEPS = 3600.0


def purger(client: Client, policy: RetentionPolicy, batch: int = 500) -> Purger:
    return Purger(services_of(client).db, policy, interval=NO_SWEEPS, batch=batch)


async def run(client: Client, text_input: str = "hi", **body: Any) -> dict[str, Any]:
    payload = {"agent": "calc", "input": text_input, **body}
    created = await client.post("/runs", params={"wait": 10}, json=payload)
    assert created.status_code == 201, created.text
    shown: dict[str, Any] = created.json()
    return shown


async def parked_then_completed(client: Client, webhook: str) -> str:
    """A run with a row of every kind: events, an approval request, a webhook delivery, an
    idempotency key."""
    created = await client.post(
        "/runs",
        params={"wait": 10},
        json={"agent": "calc", "input": "park", "webhook": webhook},
        headers={"Idempotency-Key": "create-1"},
    )
    parked = created.json()
    call_id = parked["pending_approvals"][0]["call_id"]
    decided = await client.post(
        f"/runs/{parked['id']}/approvals",
        params={"wait": 10},
        json={"decisions": [{"call_id": call_id, "approved": True}]},
    )
    assert decided.json()["status"] == "completed", decided.text
    await deliveries_once(client, parked["id"])
    return str(parked["id"])


async def gone(client: Client, run_id: str) -> None:
    """Until the run reads as unknown (bounded): the executor deletes it in its own time."""
    with anyio.fail_after(10):
        while True:
            if (await client.get(f"/runs/{run_id}")).status_code == 404:
                return
            await anyio.sleep(0.05)


async def until_ended_ago(client: Client, run_id: str, age: timedelta) -> None:
    """Sleep until the run ended `age` ago, and no longer."""
    finished = (await client.get(f"/runs/{run_id}")).json()["finished_at"]
    due = datetime.fromisoformat(finished) + age - datetime.now(UTC)
    await anyio.sleep(max(0.0, due.total_seconds()) + 0.05)


async def test_the_executor_deletes_ended_runs_past_retention_with_everything_of_them(
    make_client: ClientFactory, fake: FakeModel, receiver: Receiver
) -> None:
    fake.script("m", SCRIPT)
    settings: dict[str, Any] = {
        "run_retention": {"completed": timedelta(seconds=1)},
        "retention_interval_seconds": 0.1,
        "webhook_allowed_hosts": "127.0.0.1",
        "webhook_secret": SecretStr("whsec-test-0123456789"),
    }
    async with make_client(**settings) as client:
        before = await scrape(client)
        cancelled = await run(client, "park")
        assert (await client.post(f"/runs/{cancelled['id']}/cancel")).status_code == 202
        unfinished = await run(client, "park")
        assert unfinished["status"] == "pending_approval"
        forgotten = await parked_then_completed(client, receiver.url)
        assert all((await rows_of(client, forgotten)).values())

        await gone(client, forgotten)

        assert await rows_of(client, forgotten) == dict.fromkeys(
            (table.__tablename__ for table in OF_A_RUN), 0
        )
        # Cancelled runs are kept (no retention set for them), unfinished ones never go.
        for kept in (cancelled, unfinished):
            assert (await client.get(f"/runs/{kept['id']}")).status_code == 200
        after = await scrape(client)
        assert value(after, DELETED, kind="runs") - value(before, DELETED, kind="runs") == 1
        # Its idempotency key went with it: the same request makes a new run.
        repeat = await client.post(
            "/runs",
            json={"agent": "calc", "input": "park", "webhook": receiver.url},
            headers={"Idempotency-Key": "create-1"},
        )
        assert repeat.status_code == 201
        assert repeat.json()["id"] != forgotten


async def test_a_run_is_kept_until_it_falls_due(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", SCRIPT)
    age = timedelta(seconds=2)
    async with make_client(retention_interval_seconds=NO_SWEEPS) as client:
        policy = RetentionPolicy(runs={"completed": age, "failed": age})
        done = await run(client)
        assert done["status"] == "completed"

        assert await purger(client, policy).sweep() == {
            "runs": 0,
            "sessions": 0,
            "idempotency_keys": 0,
        }
        assert (await client.get(f"/runs/{done['id']}")).status_code == 200

        await until_ended_ago(client, done["id"], age)
        assert (await purger(client, policy).sweep())["runs"] == 1
        assert (await client.get(f"/runs/{done['id']}")).status_code == 404


async def test_a_backlog_goes_in_batches(make_client: ClientFactory, fake: FakeModel) -> None:
    fake.script("m", SCRIPT)
    async with make_client(retention_interval_seconds=NO_SWEEPS) as client:
        ids = [(await run(client))["id"] for _ in range(5)]
        policy = RetentionPolicy(runs={"completed": timedelta(seconds=1)})
        await until_ended_ago(client, ids[-1], timedelta(seconds=1))

        assert (await purger(client, policy, batch=2).sweep())["runs"] == 5

        assert (await client.get("/runs")).json()["items"] == []


async def test_a_session_goes_once_its_last_run_ended_long_enough_ago(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", SCRIPT)
    age = timedelta(seconds=1)
    async with make_client(retention_interval_seconds=NO_SWEEPS) as client:
        before = await scrape(client)
        idle = await run(client, session_id="idle")
        await run(client, session_id="busy")
        parked = await run(client, "park", session_id="busy")
        assert parked["status"] == "pending_approval"
        await until_ended_ago(client, idle["id"], age)
        recent = await run(client, session_id="recent")

        swept = await purger(client, RetentionPolicy(sessions=age)).sweep()

        assert swept["sessions"] == 1
        assert (await client.get("/sessions/idle")).status_code == 404
        # A run not ended, or ended lately, keeps its session.
        for kept in ("busy", "recent"):
            assert (await client.get(f"/sessions/{kept}")).status_code == 200
        # The session's runs are kept: only RUN_RETENTION deletes runs.
        for kept_run in (idle, parked, recent):
            assert (await client.get(f"/runs/{kept_run['id']}")).status_code == 200
        after = await scrape(client)
        assert value(after, DELETED, kind="sessions") - value(before, DELETED, kind="sessions") == 1


async def key_count(client: Client) -> int:
    async with services_of(client).db.read_scope() as session:
        return int(await session.scalar(select(func.count()).select_from(IdempotencyKey)) or 0)


async def test_an_idempotency_key_past_its_ttl_is_forgotten(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", SCRIPT)
    ttl = timedelta(seconds=1)
    settings: dict[str, Any] = {"idempotency_key_ttl": ttl, "retention_interval_seconds": NO_SWEEPS}
    async with make_client(**settings) as client:
        before = await scrape(client)
        body = {"agent": "calc", "input": "hi"}

        async def create(key: str) -> str:
            created = await client.post("/runs", json=body, headers={"Idempotency-Key": key})
            assert created.status_code in (200, 201), created.text
            return str(created.json()["id"])

        first = await create("k1")
        assert await create("k1") == first
        await anyio.sleep(ttl.total_seconds() + 0.05)
        second = await create("k2")

        # Past its TTL the key no longer answers, swept or not: the repeat makes a new run.
        again = await create("k1")
        assert again != first
        await anyio.sleep(ttl.total_seconds() + 0.05)
        assert await key_count(client) == 2

        swept = await purger(client, RetentionPolicy(idempotency_keys=ttl)).sweep()

        assert swept["idempotency_keys"] == 2
        assert await key_count(client) == 0
        assert await create("k2") != second
        after = await scrape(client)
        grew = value(after, DELETED, kind="idempotency_keys") - value(
            before, DELETED, kind="idempotency_keys"
        )
        assert grew == 2


async def test_one_process_sweeps_at_a_time(
    make_client: ClientFactory, fake: FakeModel, db_url: str
) -> None:
    if not is_postgres(db_url):
        pytest.skip("SQLite serves one process: its write transaction holds the whole database")
    fake.script("m", SCRIPT)
    async with make_client(retention_interval_seconds=NO_SWEEPS) as client:
        db = services_of(client).db
        done = await run(client)
        policy = RetentionPolicy(runs={"completed": timedelta(seconds=1)})
        await until_ended_ago(client, done["id"], timedelta(seconds=1))

        async with db.session_scope() as holder:
            assert await try_lock_for_transaction(holder, LOCK)
            async with db.session_scope() as other:
                assert not await try_lock_for_transaction(other, LOCK)
            # Another process sweeps meanwhile: this one leaves the sweep to it.
            assert (await purger(client, policy).sweep())["runs"] == 0
        assert (await client.get(f"/runs/{done['id']}")).status_code == 200

        assert (await purger(client, policy).sweep())["runs"] == 1
