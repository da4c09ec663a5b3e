"""Claimed runs start together, in one transaction; a start that cannot be stored there is each
driver's own again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import pytest
from sqlalchemy import select

from app.engine import Engine, ModelRouter, OpenAIProvider
from app.engine.state import RunStatus
from app.runtime.agents import load_agents_module
from app.services.callers import ANONYMOUS_CALLER
from app.services.lifecycle import now
from app.services.runs import NewRun, RunService
from app.store.database import Database
from app.store.leases import Leases
from app.store.models import Run, StoredEvent
from app.store.wakeups import Wakeups
from app.testing import FakeModel, FakeModelServer, text
from app.worker.commits import GroupCommit
from app.worker.driver import RunDriver
from app.worker.executor import Executor

pytestmark = pytest.mark.anyio


@dataclass
class Worker:
    db: Database
    engine: Engine
    wakeups: Wakeups
    service: RunService


@pytest.fixture
async def worker(db_url: str, fake_server: FakeModelServer) -> AsyncIterator[Worker]:
    db = Database(db_url)
    wakeups = Wakeups()
    db.on_commit = wakeups.deliver
    provider = OpenAIProvider(base_url=fake_server.base_url)
    module = load_agents_module("tests.api.agents")
    engine = Engine(module.agents, ModelRouter(provider, default_model="m"))
    try:
        yield Worker(db, engine, wakeups, RunService(db, engine, wakeups))
    finally:
        await provider.aclose()
        await db.dispose()


async def events_of(db: Database, run_id: str) -> list[str]:
    async with db.read_scope() as session:
        query = select(StoredEvent.name).where(StoredEvent.run_id == run_id)
        return list(await session.scalars(query.order_by(StoredEvent.seq)))


async def test_runs_whose_shared_start_rolled_back_are_started_by_their_drivers(
    worker: Worker, fake: FakeModel
) -> None:
    fake.script("m", [text("done")])
    ids = [
        (await worker.service.create(NewRun("calc", f"#{i}"), ANONYMOUS_CALLER))[0].id
        for i in range(2)
    ]
    async with worker.db.statement_scope() as session:
        claims = await Leases(session).claim("w", limit=10, now=now(), lease_seconds=20)
    drivers = [
        RunDriver(worker.db, worker.engine, worker.wakeups, claim, lease_seconds=20,
                  max_takeovers=3, worker="w", commits=GroupCommit(worker.db))
        for claim in claims
    ]  # fmt: skip

    # Both starts written, then the transaction fails: the claims' copies hold what it wrote.
    async def start_then_fail() -> None:
        async with worker.db.session_scope() as session:
            for driver in drivers:
                await driver.start_in(session)
            raise RuntimeError("the commit failed")

    with pytest.raises(RuntimeError):
        await start_then_fail()
    for driver in drivers:
        driver.start_undone()
        await driver.drive()

    for run_id in ids:
        assert not driver.lost_lease
        run = await worker.service.get(run_id, ANONYMOUS_CALLER)
        assert (run.status, run.final_output) == (RunStatus.COMPLETED, "done")
        names = await events_of(worker.db, run_id)
        assert names.count("run.started") == 1
        assert names[-1] == "run.completed"


async def test_a_run_that_cannot_start_fails_alone_and_the_others_start(
    worker: Worker, fake: FakeModel
) -> None:
    fake.script("m", [text("done")])
    gone, kept = [
        (await worker.service.create(NewRun(a, "x"), ANONYMOUS_CALLER))[0]
        for a in ("calc", "billing")
    ]
    # A redeploy without `calc`: its run is claimed beside `billing`'s.
    engine = Engine([worker.engine.agents.get("billing")], worker.engine.models)
    executor = Executor(worker.db, engine, worker.wakeups, concurrency=4, name="w")

    rested: list[Run] = []
    async with anyio.create_task_group() as group:
        group.start_soon(executor.run)
        with anyio.fail_after(20):
            for run_id in (gone.id, kept.id):
                run = await worker.service.get(run_id, ANONYMOUS_CALLER)
                rested.append(await worker.service.wait_until_resting(run, 10))
            executor.stop()
            await executor.stopped.wait()

    assert rested[0].status == RunStatus.FAILED
    assert rested[0].error is not None
    assert rested[0].error["code"] == "internal_error"
    assert rested[1].status == RunStatus.COMPLETED
    assert (await events_of(worker.db, kept.id)).count("run.started") == 1
