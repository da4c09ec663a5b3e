"""Nothing is lost across a restart, and executors never drive one run twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from sqlalchemy import update
from structlog.testing import capture_logs

from app.api.app import create_app
from app.engine import Engine, ModelRouter, OpenAIProvider
from app.engine.state import RunStatus
from app.runtime.agents import AgentsModule, load_agents_module
from app.services.callers import ANONYMOUS_CALLER
from app.services.lifecycle import now
from app.services.runs import NewRun, RunService
from app.settings import Settings
from app.store.approvals import ApprovalRepository
from app.store.database import Database
from app.store.leases import Claim
from app.store.lifecycle import RunLifecycle
from app.store.models import Run
from app.store.runs import RunRepository
from app.store.tenancy import EVERY_TENANT
from app.store.wakeups import Wakeups, store_changes
from app.testing import FakeModel, call, text
from app.worker.executor import Executor
from tests.api.conftest import ClientFactory, rested, services_of, serving
from tests.conftest import is_postgres

pytestmark = pytest.mark.anyio


async def test_a_run_queued_before_a_restart_completes_after_it(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", [call("add", {"a": 1, "b": 1}), text("2")])
    async with make_client(with_executor=False) as client:
        run = (await client.post("/runs", json={"agent": "calc", "input": "1+1"})).json()
    # The process stopped; a new one starts with its executor.
    async with make_client() as client:
        finished = await rested(client, run["id"])

    assert finished["status"] == "completed"
    assert finished["final_output"] == "2"


async def test_runs_of_a_stopped_process_go_back_to_the_queue(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", [call("add", {"a": 1, "b": 1}), text("2", delay=30)])
    async with make_client() as client:
        run = (await client.post("/runs", json={"agent": "calc", "input": "1+1"})).json()
        assert await anyio.to_thread.run_sync(fake.wait_for_requests, 2, "m")
    # Stopped mid-turn: the run is handed back, not left running.
    fake.script("m", [call("add", {"a": 1, "b": 1}), text("2")])
    async with make_client(with_executor=False) as client:
        assert (await client.get(f"/runs/{run['id']}")).json()["status"] == "queued"
    async with make_client() as client:
        finished = await rested(client, run["id"])

    assert finished["status"] == "completed"
    assert finished["final_output"] == "2"
    assert [e["role"] for e in finished["messages"]] == ["user", "assistant", "tool", "assistant"]


async def test_a_run_whose_agent_is_gone_fails_instead_of_looping(
    make_client: ClientFactory, settings: Settings
) -> None:
    async with make_client(with_executor=False) as client:
        run = (await client.post("/runs", json={"agent": "calc", "input": "x"})).json()
    # A redeploy without the agent: the run cannot start, and must not be retried forever.
    without_calc = AgentsModule([load_agents_module("tests.api.agents").agents[1]])
    app = create_app(settings, agents_module=without_calc)
    async with serving(app) as client:
        failed = await rested(client, run["id"])

    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "internal_error"
    assert failed["finished_at"] is not None


async def test_a_cancel_that_lands_while_a_turn_runs_is_kept_when_it_parks(
    client: Any, fake: FakeModel
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r1"}, delay=0.3)])
    run = (await client.post("/runs", json={"agent": "calc", "input": "x"})).json()
    assert await anyio.to_thread.run_sync(fake.wait_for_requests, 1, "m")
    # Another process asks for the cancel: only the database knows, no in-process signal.
    async with services_of(client).db.session_scope() as session:
        await session.execute(update(Run).where(Run.id == run["id"]).values(cancel_requested=True))

    finished = await rested(client, run["id"])

    assert finished["status"] == "cancelled"
    assert finished["pending_approvals"] == []
    assert finished["steps"][0]["tool_calls"][0]["status"] == "cancelled"
    assert (await client.get("/approvals")).json()["items"] == []
    names = [event.name for event in await stored_events(client, run["id"])]
    assert "run.pending_approval" not in names  # it never parked
    assert names.count("run.cancelled") == 1
    assert names.count("approval.requested") == 1  # the park's events, stored with the cancel


async def stored_events(client: Any, run_id: str) -> list[Any]:
    async with services_of(client).db.session_scope() as session:
        events = await RunRepository(session, EVERY_TENANT).events_after(run_id, 0, limit=1000)
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    return events


async def test_a_call_asked_again_in_doubt_is_pending_again(client: Any) -> None:
    async with make_client_run(client) as (session, run_id):
        approvals = ApprovalRepository(session, EVERY_TENANT)
        request = {
            "call_id": "c1",
            "tool": "delete_record",
            "agent": "calc",
            "in_doubt": False,
            "kind": "approval",
        }
        await approvals.add_pending(
            run_id, "default", [{**request, "arguments": {"record_id": "a"}}], [], now()
        )
        await approvals.decide(run_id, [{"call_id": "c1", "approved": True}])
        again = {**request, "in_doubt": True, "arguments": {"record_id": "a"}}
        await approvals.add_pending(
            run_id, "default", [again], [{"role": "user", "content": "x"}], now()
        )
        [row] = await approvals.page(
            statuses=["pending"], agent=None, tool=None, run_id=run_id, before_seq=None, limit=5
        )

    assert (row.call_id, row.in_doubt, row.decision) == ("c1", True, None)


@asynccontextmanager
async def make_client_run(client: Any) -> AsyncIterator[tuple[Any, str]]:
    """A stored run to hang rows on, and a session in a transaction."""
    created = (await client.post("/runs", json={"agent": "calc", "input": "x"})).json()
    async with services_of(client).db.session_scope() as session:
        yield session, created["id"]


async def test_releasing_a_run_that_rested_changes_nothing(client: Any, fake: FakeModel) -> None:
    fake.script("m", [text("done")])
    run = await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"})
    run = run.json()
    db = services_of(client).db
    async with db.session_scope() as session:
        stored = await RunRepository(session, EVERY_TENANT).get(run["id"])
        assert stored is not None
        claim = Claim(stored.id, stored.lease_token)
        await RunLifecycle(session).hand_back(claim, stored, now())

    assert (await client.get(f"/runs/{run['id']}")).json()["status"] == "completed"


async def test_two_executors_never_drive_one_run_twice(
    settings: Settings, db_url: str, fake: FakeModel, fake_server: Any
) -> None:
    if not is_postgres(db_url):
        pytest.skip("SQLite serves one process; several executors need PostgreSQL")
    count = 200
    fake.script("m", [call("add", {"a": 1, "b": 2}), text("3")])
    module = load_agents_module("tests.api.agents")
    databases = [Database(db_url), Database(db_url)]
    provider = OpenAIProvider(base_url=fake_server.base_url)
    engine = Engine(module.agents, ModelRouter(provider, default_model="m"))
    # Each executor has its own database pool and wake-ups, as separate processes would.
    executors = []
    for i, db in enumerate(databases):
        wakeups = Wakeups()
        db.on_commit = wakeups.deliver
        executors.append(
            Executor(db, engine, wakeups, concurrency=8, poll_interval=0.05, name=f"w{i}")
        )
    service = RunService(databases[0], engine, executors[0].wakeups)
    run_ids = [
        (await service.create(NewRun("calc", f"run {i}"), ANONYMOUS_CALLER))[0].id
        for i in range(count)
    ]
    try:
        with capture_logs() as logs:
            async with anyio.create_task_group() as group:
                for executor in executors:
                    group.start_soon(executor.run)
                # As an API process does: the other executor's writes are found by polling.
                changes = store_changes(databases[0])
                group.start_soon(executors[0].wakeups.poll_changes, changes, 0.05)
                with anyio.fail_after(60):
                    finished = [
                        await service.wait_until_resting(
                            await service.get(run_id, ANONYMOUS_CALLER), 60
                        )
                        for run_id in run_ids
                    ]
                for executor in executors:
                    executor.stop()
                for executor in executors:
                    await executor.stopped.wait()
                group.cancel_scope.cancel()
    finally:
        await provider.aclose()
        for db in databases:
            await db.dispose()

    started = Counter(line["worker"] for line in logs if line["event"] == "run.started")
    assert set(started) == {"w0", "w1"}  # both took runs
    assert sum(started.values()) == count  # and each run was started once
    # Exactly one model request per run and turn: no run was driven twice.
    per_run = Counter(r["messages"][1]["content"] for r in fake.requests_for("m"))
    assert per_run == {f"run {i}": 2 for i in range(count)}
    assert {run.status for run in finished} == {RunStatus.COMPLETED}


async def test_a_backlog_drains_without_waiting_for_the_poll(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    """A restart finds many runs queued and nothing new posted: every freed slot takes the next
    one, whether or not a run finished while the last claim was in flight."""
    fake.script("m", [text("done")])
    async with make_client(with_executor=False) as client:
        ids = [
            (await client.post("/runs", json={"agent": "calc", "input": f"#{i}"})).json()["id"]
            for i in range(60)
        ]
    # The poll would find the rest a minute later: the bound below is well short of it.
    async with make_client(concurrency=2, poll_interval_seconds=60) as client:
        with anyio.fail_after(30):
            for run_id in ids:
                assert (await rested(client, run_id, seconds=30))["status"] == "completed"
