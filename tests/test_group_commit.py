"""Group commit: runs' checkpoints share transactions, and one run's failure stays its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import anyio
import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.engine.state import RunStatus
from app.services.errors import LeaseLost
from app.store.database import Database
from app.store.events import insert_events
from app.store.leases import Claim, Leases
from app.store.lifecycle import RunLifecycle, Saved
from app.store.models import Run, StoredEvent
from app.worker.commits import GroupCommit
from tests.test_claim import stored_run

pytestmark = pytest.mark.anyio

Write = Callable[[AsyncSession], Awaitable[Saved]]


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    try:
        yield database
    finally:
        await database.dispose()


async def claimed(db: Database, count: int) -> list[Claim]:
    async with db.session_scope() as session:
        session.add_all([stored_run(f"r{i}", RunStatus.QUEUED) for i in range(count)])
    async with db.session_scope() as session:
        claims = await Leases(session).claim(
            "w", limit=count, now=datetime.now(UTC), lease_seconds=20
        )
    return sorted(claims, key=lambda claim: claim.run_id)


def checkpoint(claim: Claim, *, then_refused: bool = False) -> Write:
    async def write(session: AsyncSession) -> Saved:
        assert claim.run is not None
        stamp = datetime.now(UTC)
        saved = await RunLifecycle(session).checkpoint(claim, claim.run, [("note", {})], stamp)
        if saved is None:
            raise LeaseLost(f"run {claim.run_id} is no longer held")
        if then_refused:
            # Its event's number again: a write the database refuses.
            await insert_events(session, claim.run_id, saved.event_seq, [("again", {})], stamp)
        return saved

    return write


async def at_once(commits: GroupCommit, writes: list[tuple[Write, Run]]) -> list[object]:
    """Each write's result or error, the writes sent together."""
    outcomes: list[object] = [None] * len(writes)

    async def send(i: int, write: Write, run: Run) -> None:
        try:
            outcomes[i] = await commits(write, run)
        except Exception as exc:
            outcomes[i] = exc

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            for i, (write, run) in enumerate(writes):
                group.start_soon(send, i, write, run)
    return outcomes


async def stored_events(db: Database, run_id: str) -> list[int]:
    async with db.read_scope() as session:
        query = select(StoredEvent.seq).where(StoredEvent.run_id == run_id)
        return list(await session.scalars(query.order_by(StoredEvent.seq)))


def run_of(claim: Claim) -> Run:
    assert claim.run is not None
    return claim.run


async def test_writes_that_wait_for_a_commit_share_the_next(db: Database) -> None:
    claims = await claimed(db, 5)
    commits = GroupCommit(db)

    outcomes = await at_once(commits, [(checkpoint(c), run_of(c)) for c in claims])

    assert [getattr(o, "event_seq", o) for o in outcomes] == [1] * 5
    # The first write committed alone; the four that queued behind it, together.
    assert commits.groups == 1
    for claim in claims:
        assert await stored_events(db, claim.run_id) == [1]
        assert run_of(claim).event_seq == 1


async def test_a_refused_write_fails_alone_and_its_run_is_kept_as_stored(db: Database) -> None:
    claims = await claimed(db, 4)
    commits = GroupCommit(db)
    writes = [(checkpoint(c, then_refused=c.run_id == "r2"), run_of(c)) for c in claims]

    outcomes = await at_once(commits, writes)

    assert isinstance(outcomes[2], DBAPIError)
    assert [getattr(o, "event_seq", None) for i, o in enumerate(outcomes) if i != 2] == [1] * 3
    assert await stored_events(db, "r2") == []
    assert run_of(claims[2]).event_seq == 0  # its copy as the store has it, not as written
    for run_id in ("r0", "r1", "r3"):
        assert await stored_events(db, run_id) == [1]


async def test_a_fenced_out_write_in_a_group_leaves_the_others_committed(db: Database) -> None:
    claims = await claimed(db, 4)
    lost = claims[1]
    stale = Claim(lost.run_id, lost.lease_token - 1, run=lost.run)  # an older lease's holder
    commits = GroupCommit(db)
    writes = [(checkpoint(c), run_of(c)) for c in claims]
    writes[1] = (checkpoint(stale), run_of(lost))

    outcomes = await at_once(commits, [writes[3], *writes[:3]])  # r3 commits alone first

    assert isinstance(outcomes[2], LeaseLost)
    assert await stored_events(db, lost.run_id) == []
    for run_id in ("r0", "r2", "r3"):
        assert await stored_events(db, run_id) == [1]
    assert commits.groups == 1  # r0 and r2 together, r1's fenced write beside them


async def test_a_group_writes_its_runs_in_the_order_of_their_ids(db: Database) -> None:
    """The lock order every transaction of several runs keeps (a heartbeat's too), so none
    can deadlock with another."""
    claims = await claimed(db, 4)
    commits = GroupCommit(db)
    written: list[str] = []

    def recorded(claim: Claim) -> Write:
        write = checkpoint(claim)

        async def record(session: AsyncSession) -> Saved:
            written.append(claim.run_id)
            return await write(session)

        return record

    queued = [claims[3], claims[2], claims[0], claims[1]]  # r3 commits alone first
    await at_once(commits, [(recorded(c), run_of(c)) for c in queued])

    assert written == ["r3", "r0", "r1", "r2"]
    assert commits.groups == 1
