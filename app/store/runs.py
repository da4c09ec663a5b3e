"""All SQL about runs and their events. Repositories never commit: the caller's scope does."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    Integer,
    Table,
    Text,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    inspect,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from app.store.models import Run, RunEvent
from app.store.status import UNFINISHED, Status

EventRecord = tuple[str, dict[str, Any]]
"""An event to store: its name and JSON data."""


@dataclass(frozen=True, slots=True)
class Saved:
    """A fenced save that went through: the run's last event id, and whether a cancel was
    requested meanwhile. `earlier` means an attempt whose commit was in doubt (the connection
    dropped) had stored it already, with everything else that attempt's transaction wrote."""

    event_seq: int
    cancel_requested: bool
    earlier: bool = False


@dataclass(frozen=True, slots=True)
class Claim:
    """A run an executor took, and the lease token that fences its writes."""

    run_id: str
    lease_token: int
    takeovers: int = 0  # of the run, this claim's included
    taken_over: bool = False  # this claim took the run from a lost executor
    # The run as claimed, so a driver needs no read of its own; not part of the claim's identity.
    run: Run | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Renewal:
    """What a heartbeat found: the runs whose cancel was requested, and the runs another
    executor took over (their drivers must stop)."""

    cancel_requested: list[str]
    taken: set[str]


# The hot writes (every turn) go to the tables as Core statements: the ORM's bulk update and
# insert paths cost more than the SQL they send.
_RUNS = cast(Table, Run.__table__)
_EVENTS = cast(Table, RunEvent.__table__)
# Above any run's seq: the upper end of a page's range when it starts from the newest run.
_SEQ_UNBOUNDED = 2**62
# A run's attributes by the names of their columns (`run_metadata` is stored as `metadata`).
_RUN_COLUMNS = {attribute.key: attribute.columns[0].name for attribute in inspect(Run).column_attrs}


def _waits_for_its_session() -> Any:
    """A run of a session waits while an earlier run of that session is unfinished."""
    earlier = aliased(Run)
    return exists().where(
        earlier.session_id == Run.session_id,
        earlier.seq < Run.seq,
        earlier.status.in_(UNFINISHED),
    )


@dataclass(frozen=True, slots=True)
class Queue:
    """The queued runs: those an executor may claim now (and since when the oldest of them
    waits), and those that wait for an earlier run of their session to rest."""

    claimable: int
    oldest_claimable_at: datetime | None
    waiting_for_session: int


@cache
def _claim_statement() -> Any:
    """The claim, built once: building it costs far more than running it (about 2 ms in the
    ORM). Parameters: `worker`, `limit`, `now`, `expires`."""
    now = bindparam("now", type_=Run.lease_expires_at.type)
    claimable = or_(
        and_(Run.status == Status.QUEUED, ~_waits_for_its_session()),
        and_(Run.status == Status.RUNNING, Run.lease_expires_at < now),
    )
    # Claiming a running run whose lease expired is a takeover, unless this executor held it
    # (the database was away longer than the lease): that counts towards no bound.
    worker = bindparam("worker", type_=Run.claimed_by.type)
    takeover = and_(Run.status == Status.RUNNING, Run.claimed_by.is_distinct_from(worker))
    picked = (
        # Named apart from `runs.seq`: SQLite's RETURNING drops table names, and `seq = seq`
        # would match every picked row.
        select(Run.seq.label("picked_seq"), takeover.label("takeover"))
        .where(claimable)
        .order_by(Run.seq)
        .limit(bindparam("limit", type_=Integer()))
        .with_for_update(skip_locked=True)
        .cte("picked")
        # Computed once, before the update: the flag must read the row as it was.
        .prefix_with("MATERIALIZED")
    )
    # SQLite's RETURNING names only the updated table; a subquery may read the pick.
    was_takeover = (
        select(picked.c.takeover).where(picked.c.picked_seq == Run.seq).correlate(Run)
    ).scalar_subquery()
    return (
        update(Run)
        .where(Run.seq == picked.c.picked_seq, claimable)
        .values(
            status=Status.RUNNING,
            claimed_by=worker,
            lease_token=Run.lease_token + 1,
            lease_expires_at=bindparam("expires", type_=Run.lease_expires_at.type),
            takeovers=Run.takeovers + case((picked.c.takeover, 1), else_=0),
            updated_at=now,
        )
        .returning(Run, was_takeover)
        .execution_options(synchronize_session=False)
    )


class RunRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, run: Run, events: Sequence[EventRecord], now: datetime) -> None:
        """Store a new run (built, not added to the session) with its first events."""
        run.event_seq = len(events)
        given = inspect(run).dict  # the attributes set; the columns' defaults fill the rest
        values = {_RUN_COLUMNS[key]: value for key, value in given.items() if key in _RUN_COLUMNS}
        run.seq = await self.session.scalar(insert(_RUNS).values(values).returning(_RUNS.c.seq))
        await self._insert_events(run.id, run.event_seq, events, now)

    async def get(
        self, run_id: str, *, for_update: bool = False, refresh: bool = False
    ) -> Run | None:
        """The run; `refresh` re-reads a run this session already loaded (after a lock wait)."""
        query = select(Run).where(Run.id == run_id)
        if for_update:
            query = query.with_for_update()
        if refresh:
            query = query.execution_options(populate_existing=True)
        result: Run | None = await self.session.scalar(query)
        return result

    async def page(
        self,
        *,
        statuses: Sequence[str] = (),
        agent: str | None = None,
        session_id: str | None = None,
        before_seq: int | None = None,
        limit: int,
    ) -> list[Run]:
        """Newest first; `before_seq` continues after the last run of the previous page."""
        filters: list[tuple[InstrumentedAttribute[Any], str]] = []
        if len(statuses) == 1:
            filters.append((Run.status, statuses[0]))
        if agent is not None:
            filters.append((Run.agent, agent))
        if session_id is not None:
            filters.append((Run.session_id, session_id))
        before = _SEQ_UNBOUNDED if before_seq is None else before_seq
        query = select(Run).limit(limit)
        if filters:
            # The newest runs of one status (agent, session) are a range of its (column, seq)
            # index, walked backwards. Given `column = value` instead, PostgreSQL reads the
            # newest runs of any kind and filters them: it takes values to be spread evenly
            # over `seq`, and 100,000 parked runs under 1,000,000 finished ones took a second.
            (column, value), others = filters[0], filters[1:]
            query = query.where(
                tuple_(column, Run.seq) > tuple_(value, 0),
                tuple_(column, Run.seq) < tuple_(value, before),
                *(other == wanted for other, wanted in others),
            ).order_by(column.desc(), Run.seq.desc())
        else:
            query = query.where(Run.seq < before).order_by(Run.seq.desc())
        if len(statuses) > 1:
            query = query.where(Run.status.in_(statuses))
        return list(await self.session.scalars(query))

    async def unfinished_in_session(
        self, session_id: str, *, for_update: bool = False
    ) -> list[Run]:
        query = (
            select(Run)
            .where(Run.session_id == session_id, Run.status.in_(UNFINISHED))
            .order_by(Run.seq)
        )
        if for_update:
            query = query.with_for_update()
        return list(await self.session.scalars(query))

    async def claim(
        self, worker: str, *, limit: int, now: datetime, lease_seconds: float
    ) -> list[Claim]:
        """Take up to `limit` runs, in one statement: queued ones whose session has no earlier
        unfinished run, and running ones whose lease expired. The rows are picked with SKIP
        LOCKED, and the update's guard repeats the pick's condition (SQLite ignores FOR UPDATE
        but serves a single process). Each claim carries its run as the claim left it."""
        expires = now + timedelta(seconds=lease_seconds)
        parameters = {"worker": worker, "limit": limit, "now": now, "expires": expires}
        result = await self.session.execute(_claim_statement(), parameters)
        return [
            Claim(run.id, run.lease_token, run.takeovers, taken_over=bool(taken_over), run=run)
            for run, taken_over in result.all()
        ]

    async def save_fenced(
        self,
        claim: Claim,
        values: dict[str, Any],
        events: Sequence[EventRecord],
        now: datetime,
        *,
        after_seq: int,
    ) -> Saved | None:
        """Write the driver's progress and its events, only while `claim` still holds the run,
        on top of the run as the driver last stored it (its events up to `after_seq`).

        None means the lease was lost: another executor owns the run now. Repeating a save
        whose commit was in doubt is safe: it finds the first attempt's events and says so.
        """
        result = await self.session.execute(
            update(_RUNS)
            .where(
                _RUNS.c.id == claim.run_id,
                _RUNS.c.lease_token == claim.lease_token,
                _RUNS.c.event_seq == after_seq,
            )
            .values(**values, event_seq=_RUNS.c.event_seq + len(events), updated_at=now)
            .returning(_RUNS.c.event_seq, _RUNS.c.cancel_requested)
        )
        row = result.one_or_none()
        if row is None:
            return await self._stored_earlier(claim, after_seq + len(events))
        last_seq, cancel_requested = row
        await self._insert_events(claim.run_id, last_seq, events, now)
        return Saved(event_seq=last_seq, cancel_requested=bool(cancel_requested))

    async def _stored_earlier(self, claim: Claim, expected_seq: int) -> Saved | None:
        # Under a held lease only its holder adds events, so the expected last event id
        # means this very save was committed by an attempt that lost its connection.
        result = await self.session.execute(
            select(Run.lease_token, Run.event_seq, Run.cancel_requested).where(
                Run.id == claim.run_id
            )
        )
        row = result.one_or_none()
        if row is None or row.lease_token != claim.lease_token or row.event_seq != expected_seq:
            return None
        return Saved(row.event_seq, bool(row.cancel_requested), earlier=True)

    async def release(self, claim: Claim, event: EventRecord, now: datetime) -> None:
        """Put a run this claim still drives back in the queue, from its last stored state."""
        result = await self.session.execute(
            update(Run)
            .where(
                Run.id == claim.run_id,
                Run.lease_token == claim.lease_token,
                Run.status == Status.RUNNING,
            )
            .values(
                status=Status.QUEUED,
                claimed_by=None,
                lease_expires_at=None,
                updated_at=now,
                event_seq=Run.event_seq + 1,
            )
            .returning(Run.event_seq)
        )
        last_seq = result.scalar_one_or_none()
        if last_seq is not None:
            await self._insert_events(claim.run_id, last_seq, [event], now)

    async def expire_leases(self, now: datetime) -> int:
        """End every lease now: for when no executor can hold one (the only process that may
        use a SQLite file is starting, so whoever held them is dead). The next claim takes
        the runs over. How many there were."""
        result = await self.session.execute(
            update(_RUNS)
            .where(_RUNS.c.status == Status.RUNNING, _RUNS.c.lease_expires_at > now)
            .values(lease_expires_at=now)
        )
        return int(getattr(result, "rowcount", 0))

    async def save(self, run: Run, events: Sequence[EventRecord], now: datetime) -> None:
        """Write changes made to a loaded (and locked) run, with their events."""
        first_seq = run.event_seq + 1
        run.event_seq += len(events)
        run.updated_at = now
        await self.session.flush()
        await self._insert_events(run.id, first_seq + len(events) - 1, events, now)

    async def cancel_requested(self, run_id: str) -> bool:
        """Whether a cancel was asked for, with the run's row locked until the commit."""
        query = select(Run.cancel_requested).where(Run.id == run_id).with_for_update()
        return bool(await self.session.scalar(query))

    async def renew_leases(self, claims: Iterable[Claim], *, expires_at: datetime) -> Renewal:
        """Extend the leases these claims still hold (fenced by their tokens, like every
        write of a driver)."""
        held = [(claim.run_id, claim.lease_token) for claim in claims]
        if not held:
            return Renewal([], set())
        result = await self.session.execute(
            update(Run)
            .where(tuple_(Run.id, Run.lease_token).in_(held), Run.status == Status.RUNNING)
            .values(lease_expires_at=expires_at)
            .returning(Run.id, Run.cancel_requested)
        )
        rows = result.all()
        renewed = {run_id for run_id, _ in rows}
        cancels = [run_id for run_id, cancel in rows if cancel]
        missing = {run_id: token for run_id, token in held if run_id not in renewed}
        if not missing:
            return Renewal(cancels, set())
        # Rested meanwhile (still this claim's token), or taken over (a newer token).
        current = await self.session.execute(
            select(Run.id, Run.lease_token).where(Run.id.in_(missing))
        )
        tokens: dict[str, int] = dict(current.all())
        taken = {run_id for run_id, token in missing.items() if tokens.get(run_id) != token}
        return Renewal(cancels, taken)

    async def status_counts(self) -> dict[str, int]:
        """How many runs the store holds in each status (every status, zeros included)."""
        result = await self.session.execute(select(Run.status, func.count()).group_by(Run.status))
        counts = {status.value: 0 for status in Status}
        for status, count in result.all():
            counts[status] = count
        return counts

    async def queue(self) -> Queue:
        """The queue as the claim sees it: a queued run behind an unfinished run of its session
        (one parked for a person, say) is not claimable, and waits legitimately."""
        waits = _waits_for_its_session()
        claimable_since = case((waits, None), else_=Run.updated_at)
        result = await self.session.execute(
            select(
                func.count(claimable_since),
                func.min(claimable_since),
                func.count(case((waits, 1))),
            ).where(Run.status == Status.QUEUED)
        )
        claimable, oldest, waiting = result.one()
        return Queue(claimable, oldest, waiting)

    async def events_after(
        self, run_id: str, after_seq: int, *, limit: int, max_bytes: int | None = None
    ) -> list[RunEvent]:
        """The run's events after `after_seq`, in order: at most `limit`, and no more than
        `max_bytes` of JSON (but always the first), so a page of large tool outputs is never
        held whole."""
        query = (
            select(RunEvent)
            .where(RunEvent.run_id == run_id, RunEvent.seq > after_seq)
            .order_by(RunEvent.seq)
            .limit(limit)
        )
        if max_bytes is None:
            return list(await self.session.scalars(query))
        size = func.length(sql_cast(RunEvent.data, Text))
        sized = (
            select(RunEvent.id, func.sum(size).over(order_by=RunEvent.seq).label("through"))
            .where(RunEvent.run_id == run_id, RunEvent.seq > after_seq)
            .order_by(RunEvent.seq)
            .limit(limit)
            .subquery()
        )
        # The sizes are the database's to add up: an event's data is read here only if kept.
        first = select(func.min(sized.c.through)).scalar_subquery()
        kept = select(sized.c.id).where(or_(sized.c.through <= max_bytes, sized.c.through == first))
        query = select(RunEvent).where(RunEvent.id.in_(kept)).order_by(RunEvent.seq)
        return list(await self.session.scalars(query))

    async def progress(self, run_id: str) -> tuple[int, str, int] | None:
        """The run's last event id, status and turns: what a watcher needs after a change,
        without reading the run's state."""
        result = await self.session.execute(
            select(Run.event_seq, Run.status, Run.turns).where(Run.id == run_id)
        )
        row = result.one_or_none()
        return None if row is None else (row.event_seq, row.status, row.turns)

    async def event_seqs(self, run_ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        """The last event id and the status of each run: what changed since a watcher last
        looked."""
        result = await self.session.execute(
            select(Run.id, Run.event_seq, Run.status).where(Run.id.in_(run_ids))
        )
        return {run_id: (seq, status) for run_id, seq, status in result.all()}

    async def _insert_events(
        self, run_id: str, last_seq: int, events: Sequence[EventRecord], now: datetime
    ) -> None:
        if not events:
            return
        first_seq = last_seq - len(events) + 1
        rows = [
            {"run_id": run_id, "seq": first_seq + i, "name": name, "data": data, "created_at": now}
            for i, (name, data) in enumerate(events)
        ]
        await self.session.execute(insert(_EVENTS), rows)
