"""Wake-ups: how a watcher hears of changes other processes made (found by polling)."""

from __future__ import annotations

from typing import cast

import anyio
import pytest

from app.engine import Engine
from app.engine.state import RunStatus
from app.services.lifecycle import now
from app.services.runs import RunService
from app.store.database import Database
from app.store.lifecycle import RunLifecycle
from app.store.models import Run
from app.store.wakeups import Stored, Wakeups

pytestmark = pytest.mark.anyio


class StoreSeen:
    """Stands in for what `poll_changes` reads of the store: each run's event id and status."""

    def __init__(self) -> None:
        self.runs: dict[str, tuple[int, str]] = {}
        self.polled = anyio.Event()

    async def read(self, run_ids: list[str]) -> dict[str, tuple[int, str]]:
        self.polled.set()
        return {run_id: self.runs[run_id] for run_id in run_ids if run_id in self.runs}


@pytest.fixture
def store() -> StoreSeen:
    return StoreSeen()


async def poll_once(wakeups: Wakeups, store: StoreSeen) -> None:
    store.polled = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(wakeups.poll_changes, store.read, 0.001)
            await store.polled.wait()
            await anyio.wait_all_tasks_blocked()
            group.cancel_scope.cancel()


async def test_a_change_found_by_polling_carries_the_run_s_status(store: StoreSeen) -> None:
    wakeups = Wakeups()
    store.runs["r"] = (3, "running")
    with wakeups.watch("r") as watch:
        await poll_once(wakeups, store)
        assert await watch.next() == Stored(3, "running")


async def test_a_watch_hears_of_a_change_found_while_its_reader_was_reading(
    store: StoreSeen,
) -> None:
    wakeups = Wakeups()
    # One watcher is there already; the poll finds the run rested at event 7 ...
    with wakeups.watch("r"):
        store.runs["r"] = (7, "completed")
        await poll_once(wakeups, store)
        # ... while a second reader had read it at event 5: it is told at once, not never.
        with wakeups.watch("r", seen_seq=5) as late:
            with anyio.fail_after(5):
                assert await late.next() == Stored(7)
        # A reader that read event 7 itself has nothing to hear.
        with wakeups.watch("r", seen_seq=7) as current:
            assert not current.items


def test_a_watch_hears_of_a_change_this_process_made_while_its_reader_was_reading() -> None:
    wakeups = Wakeups()
    # The executor here commits event 7 while nobody watches: a reader's read, begun before
    # that commit, returns event 5 after it.
    wakeups.run_changed("r", 7, "completed")
    with wakeups.watch("r", seen_seq=5) as late:
        assert list(late.items) == [Stored(7)]
    with wakeups.watch("r", seen_seq=7) as current:
        assert not current.items


async def test_merged_notices_keep_the_newest_status() -> None:
    wakeups = Wakeups()
    with wakeups.watch("r") as watch:
        wakeups.run_changed("r", 7, "completed")  # the in-process executor's rest
        wakeups.run_changed("r", 6, "running")  # a poll that read before that commit
        assert await watch.next() == Stored(7, "completed")
        wakeups.run_changed("r", 8, "running")
        wakeups.run_changed("r", None)  # whatever is stored now, status unknown
        assert await watch.next() == Stored(None, None)


async def test_a_wait_answers_at_once_when_the_process_stops(db_url: str) -> None:
    db = Database(db_url)
    wakeups = Wakeups()
    service = RunService(db, cast(Engine, None), wakeups)
    try:
        async with db.session_scope() as session:
            running = Run(
                id="run_r",
                agent="a",
                current_agent="a",
                input=[],
                config={},
                context={},
                run_metadata={},
                created_at=now(),
                updated_at=now(),
            )
            await RunLifecycle(session).create(running, now())
        running.status = RunStatus.RUNNING  # as an executor claimed it
        answered = anyio.Event()

        async def wait() -> None:
            await service.wait_until_resting(running, 60)
            answered.set()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                wakeups.close()
                # A draining turn's checkpoint in the same tick: its notice says `running`.
                wakeups.run_changed("run_r", 8, RunStatus.RUNNING)
                await answered.wait()
    finally:
        await db.dispose()
