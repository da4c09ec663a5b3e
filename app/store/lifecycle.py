"""Every change of a run's status, and how a lease ends: nothing else writes them (taking and
keeping a lease is `app.store.leases`'). What happens to a run:

- `create`: a new run, queued;
- `start`, `checkpoint`: the executor that holds a run stores its progress, and where it comes
  to rest (parked or ended: the lease ends with it);
- `hand_back`: a stopping executor puts a run back in the queue;
- `decide`, `cancel`, `request_cancel`: the API's changes to a run whose row it locked; the
  first two fence out any executor that still thinks it holds the run.

An executor's writes are fenced by its lease token and by the run's last event id, so a process
that lost the run cannot write and a write repeated after a commit in doubt is recognised. A
status change stores its event with it, each write records the signal its waiters need
(`app.store.signals`), and the caller's copy of the run is kept as stored. One Core statement
a write: on the hot path the ORM's unit of work costs more than the SQL it sends.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    case,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.engine.state import RunStatus
from app.store import signals
from app.store.conversation import StoredState, history_through, stored_form, write_rows
from app.store.events import EventRecord, insert_events, status_event
from app.store.leases import Claim
from app.store.models import Run
from app.store.status import ENDED


def queue_rank(tenant: str) -> ColumnElement[int]:
    """A new run's place in the queue, the claim taking the lowest first: right behind the
    tenant's last queued run, or at the queue's head when it has none. So each tenant's next
    run is near the front, whatever the backlog of another: claims go round the tenants rather
    than through one tenant's burst first. Two runs of one rank go in the order they came."""
    queued = Run.status == RunStatus.QUEUED
    head = select(func.coalesce(func.min(Run.queue_rank), 0)).where(queued).scalar_subquery()
    behind_own = (
        select(func.max(Run.queue_rank) + 1).where(Run.tenant == tenant, queued).scalar_subquery()
    )
    return case((behind_own > head, behind_own), else_=head)


@dataclass(frozen=True, slots=True)
class Saved:
    """A fenced write that went through: the run's last event id, and whether a cancel was
    requested meanwhile. `earlier` means an attempt whose commit was in doubt (the connection
    dropped) had stored it already, with everything else that attempt's transaction wrote."""

    event_seq: int
    cancel_requested: bool
    earlier: bool = False


@dataclass(frozen=True, slots=True)
class Progress:
    """What a checkpoint stores of a run: the engine's state, and what is read beside it."""

    state: dict[str, Any]
    current_agent: str
    turns: int
    moved_on: bool = False  # a model answer or a tool result: the bound on takeovers restarts


@dataclass(frozen=True, slots=True)
class Rest:
    """Where a run comes to rest: parked for a person, or ended."""

    status: RunStatus
    error: dict[str, str] | None = None
    final_output: Any = None  # text, or a structured output's JSON value


_RUNS = cast(Table, Run.__table__)
# A run's attributes by the names of their columns (`run_metadata` is stored as `metadata`).
RUN_COLUMNS = {attribute.key: attribute.columns[0].name for attribute in inspect(Run).column_attrs}
# No executor holds a resting or queued run.
_NO_LEASE = {"claimed_by": None, "lease_expires_at": None}


class FencedWrites(ABC):
    """The writes of an executor's claimed run, each fenced by its lease: what they store is
    decided here, how it is stored by `_fenced` (`RunLifecycle` in a session, or one
    statement on PostgreSQL, `app.store.direct.DirectWrites`)."""

    async def start(
        self,
        claim: Claim,
        run: Run,
        progress: Progress,
        events: Sequence[EventRecord],
        now: datetime,
        *,
        first: bool,
    ) -> Saved | None:
        """The claimed run's state as its executor starts it (`first`) or resumes it."""
        values = _progress_values(progress)
        if first:
            values["started_at"] = now
        name = "run.started" if first else "run.resumed"
        opening = status_event(
            name, run.id, RunStatus.RUNNING, progress.current_agent, run.error, progress.state
        )
        return await self._fenced(claim, run, values, [opening, *events], now)

    async def checkpoint(
        self,
        claim: Claim,
        run: Run,
        events: Sequence[EventRecord],
        now: datetime,
        *,
        progress: Progress | None = None,
        rest: Rest | None = None,
    ) -> Saved | None:
        """Store the executor's progress with its events, and where the run rests, if it does:
        its lease ends with it. None when `claim` no longer holds the run."""
        values: dict[str, Any] = _progress_values(progress) if progress else {}
        records = list(events)
        if rest is not None:
            values |= {"status": rest.status, "error": rest.error, **_NO_LEASE}
            if rest.status in ENDED:
                values |= {"final_output": _output_text(rest.final_output), "finished_at": now}
            agent = progress.current_agent if progress else run.current_agent
            state = progress.state if progress else run.state
            name = f"run.{rest.status}"
            records.append(status_event(name, run.id, rest.status, agent, rest.error, state))
        return await self._fenced(claim, run, values, records, now)

    @abstractmethod
    async def _fenced(
        self,
        claim: Claim,
        run: Run,
        values: dict[str, Any],
        events: Sequence[EventRecord],
        now: datetime,
    ) -> Saved | None:
        """Write `values` (by attribute) and `events` only while `claim` still holds the run,
        on top of the run as this executor last stored it; None when it no longer does."""


class RunLifecycle(FencedWrites):
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, run: Run, now: datetime) -> None:
        """Store a new run (built, not added to the session), queued, with its first event."""
        event = status_event("run.queued", run.id, RunStatus.QUEUED, run.current_agent, None, None)
        run.status = RunStatus.QUEUED
        run.event_seq = 1
        run.cancel_requested, run.lease_token, run.takeovers = False, 0, 0
        given = dict(inspect(run).dict)  # the attributes set; the columns' defaults fill the rest
        stored, carried, split = await self._state_written(run, given, [event], 1)
        values = {RUN_COLUMNS[key]: value for key, value in stored.items() if key in RUN_COLUMNS}
        values["queue_rank"] = queue_rank(run.tenant)
        inserted = await self.session.execute(
            insert(_RUNS).values(values).returning(_RUNS.c.seq, _RUNS.c.queue_rank)
        )
        run.seq, rank = inserted.one()
        set_committed_value(run, "queue_rank", rank)
        if "state" in carried:
            set_committed_value(run, "state", carried["state"])
        await self._write(run.id, split, 1, [event], now)
        signals.record(self.session, signals.WorkQueued())

    async def hand_back(self, claim: Claim, run: Run, now: datetime) -> None:
        """Put a run this claim still drives back in the queue, from its last stored state."""
        result = await self.session.execute(
            update(_RUNS)
            .where(
                _RUNS.c.id == claim.run_id,
                _RUNS.c.lease_token == claim.lease_token,
                _RUNS.c.status == RunStatus.RUNNING,
            )
            .values(
                status=RunStatus.QUEUED,
                **_NO_LEASE,
                updated_at=now,
                event_seq=_RUNS.c.event_seq + 1,
            )
            .returning(_RUNS.c.event_seq)
        )
        last_seq = result.scalar_one_or_none()
        if last_seq is None:
            return
        event = status_event(
            "run.queued", run.id, RunStatus.QUEUED, run.current_agent, run.error, run.state
        )
        await insert_events(self.session, run.id, last_seq, [event], now)
        apply_stored(run, {"status": RunStatus.QUEUED, **_NO_LEASE, "event_seq": last_seq})
        signals.record(self.session, signals.RunChanged(run.id, last_seq, RunStatus.QUEUED))
        signals.record(self.session, signals.WorkQueued())

    async def decide(
        self,
        run: Run,
        state: dict[str, Any],
        events: Sequence[EventRecord],
        now: datetime,
        *,
        resumes: bool,
    ) -> None:
        """Store decisions on a parked run (its row locked); when it `resumes`, it is queued
        for any executor."""
        values: dict[str, Any] = {"state": state, **self._fence_out(run)}
        records = list(events)
        if resumes:
            values["status"] = RunStatus.QUEUED
            queued = status_event(
                "run.queued", run.id, RunStatus.QUEUED, run.current_agent, run.error, state
            )
            records.append(queued)
            signals.record(self.session, signals.WorkQueued())
        await self._locked(run, values, records, now)

    async def cancel(
        self,
        run: Run,
        events: Sequence[EventRecord],
        now: datetime,
        *,
        state: dict[str, Any] | None,
    ) -> None:
        """End a queued or parked run (its row locked) as cancelled; `state` is its state with
        every open call closed, None for a run that never started."""
        values: dict[str, Any] = {"status": RunStatus.CANCELLED, "finished_at": now}
        values |= self._fence_out(run) | _NO_LEASE
        if state is not None:
            values["state"] = state
        cancelled = status_event(
            "run.cancelled", run.id, RunStatus.CANCELLED, run.current_agent, run.error, state
        )
        await self._locked(run, values, [*events, cancelled], now)
        signals.record(self.session, signals.WorkQueued())  # the session's next run may start

    async def request_cancel(self, run: Run, now: datetime) -> None:
        """Flag a running run (its row locked): its executor stores `cancelled` itself."""
        await self.session.execute(
            update(_RUNS).where(_RUNS.c.id == run.id).values(cancel_requested=True, updated_at=now)
        )
        apply_stored(run, {"cancel_requested": True, "updated_at": now})
        signals.record(self.session, signals.RunChanged(run.id))
        signals.record(self.session, signals.CancelRequested(run.id))

    async def _state_written(
        self,
        run: Run,
        values: dict[str, Any],
        events: Sequence[EventRecord],
        last_seq: int,
    ) -> tuple[dict[str, Any], dict[str, Any], StoredState | None]:
        """`values` as the row stores them, as the caller's copy carries them, and the split
        of their state: a state is stored without what the store has already, and `events`
        (the run's up to `last_seq`) without the messages it stores."""
        state = values.get("state")
        if state is None:
            return values, values, None
        previous = run.state
        if previous is not None and "messages" not in previous:
            raise ValueError(f"run {run.id} was read without its messages")
        through = None
        if previous is None:
            first, length = state.get("history_from", 0), state.get("history_length", 0)
            through = await history_through(self.session, run, first, length)
        split = stored_form(state, previous, through, events, last_seq - len(events) + 1)
        stored = {**values, "state": split.compact}
        return stored, {**values, "state": split.carried}, split

    async def _write(
        self,
        run_id: str,
        split: StoredState | None,
        last_seq: int,
        events: Sequence[EventRecord],
        now: datetime,
    ) -> None:
        """The rows beside the run's: its new messages and steps, and its events."""
        places = None
        if split is not None:
            await write_rows(self.session, run_id, split.new_messages, split.new_steps)
            places = split.message_events
        await insert_events(self.session, run_id, last_seq, events, now, places)

    @staticmethod
    def _fence_out(run: Run) -> dict[str, Any]:
        # A new token: a driver that still thinks it holds the run can write nothing more.
        return {"lease_token": run.lease_token + 1}

    async def _fenced(
        self,
        claim: Claim,
        run: Run,
        values: dict[str, Any],
        events: Sequence[EventRecord],
        now: datetime,
    ) -> Saved | None:
        """Write `values` and `events` only while `claim` still holds the run, on top of the
        run as this executor last stored it. Repeating a write whose commit was in doubt is
        safe: it finds the first attempt's events and says so."""
        after_seq = run.event_seq
        expected = after_seq + len(events)
        stored, carried, split = await self._state_written(run, values, events, expected)
        result = await self.session.execute(
            update(_RUNS)
            .where(
                _RUNS.c.id == claim.run_id,
                _RUNS.c.lease_token == claim.lease_token,
                _RUNS.c.event_seq == after_seq,
            )
            .values(
                **_columns(stored),
                event_seq=_RUNS.c.event_seq + len(events),
                updated_at=now,
            )
            .returning(_RUNS.c.event_seq, _RUNS.c.cancel_requested)
        )
        row = result.one_or_none()
        if row is None:
            saved = await self._stored_earlier(claim, expected)
            if saved is None:
                return None
        else:
            saved = Saved(event_seq=row.event_seq, cancel_requested=bool(row.cancel_requested))
            await self._write(run.id, split, saved.event_seq, events, now)
        apply_stored(run, {**carried, "event_seq": saved.event_seq, "updated_at": now})
        signals.record(self.session, signals.RunChanged(run.id, saved.event_seq, run.status))
        return saved

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

    async def _locked(
        self, run: Run, values: dict[str, Any], events: Sequence[EventRecord], now: datetime
    ) -> None:
        last_seq = run.event_seq + len(events)
        stored, carried, split = await self._state_written(run, values, events, last_seq)
        written = {"event_seq": last_seq, "updated_at": now}
        await self.session.execute(
            update(_RUNS).where(_RUNS.c.id == run.id).values(**_columns({**stored, **written}))
        )
        await self._write(run.id, split, last_seq, events, now)
        apply_stored(run, {**carried, **written})
        signals.record(self.session, signals.RunChanged(run.id, last_seq, run.status))


def _progress_values(progress: Progress) -> dict[str, Any]:
    values: dict[str, Any] = {
        "state": progress.state,
        "current_agent": progress.current_agent,
        "turns": progress.turns,
    }
    if progress.moved_on:
        values["takeovers"] = 0
    return values


def _columns(values: dict[str, Any]) -> dict[str, Any]:
    return {RUN_COLUMNS[key]: value for key, value in values.items()}


def apply_stored(run: Run, values: dict[str, Any]) -> None:
    """Keep the caller's copy of the run as stored, without making it a pending change."""
    for key, value in values.items():
        set_committed_value(run, key, value)


def _output_text(output: Any) -> str | None:
    """The final output as its text column keeps it: a structured value as JSON text (the
    run's state keeps the value itself, which the run resource shows)."""
    return output if output is None or isinstance(output, str) else json.dumps(output)
