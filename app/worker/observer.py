"""The executor's observer: writes each engine checkpoint, with its events, to the store."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from app.engine import RunState, RunStatus
from app.engine.events import RunEvent, TextDelta
from app.services.errors import LeaseLost
from app.services.lifecycle import event_records, now, save_to_session
from app.store.approvals import ApprovalRepository
from app.store.direct import DirectWrites
from app.store.events import EventRecord
from app.store.leases import Claim
from app.store.lifecycle import Progress, Rest, RunLifecycle, Saved
from app.store.models import Run
from app.store.runs import RunRepository
from app.store.sessions import SessionRepository
from app.store.snapshot import state_json
from app.store.tenancy import EVERY_TENANT, Tenancy
from app.store.wakeups import Wakeups
from app.webhooks import outbox
from app.worker.commits import GroupCommit
from app.worker.retry import Retrier


class StoreObserver:
    """Stores the run after every engine checkpoint, fenced by the executor's lease."""

    def __init__(
        self,
        commits: GroupCommit,
        wakeups: Wakeups,
        claim: Claim,
        run: Run,
        retry: Retrier,
        direct: DirectWrites | None = None,
    ) -> None:
        self.commits = commits
        self.direct = direct
        self.retry = retry
        self.wakeups = wakeups
        self.claim = claim
        self.run = run  # a detached copy, kept as stored by the store's writes
        self.cancel_requested = run.cancel_requested
        self._unsaved: list[EventRecord] = []  # events of a park not stored

    async def on_delta(self, delta: TextDelta) -> None:
        # Never stored: live only. A model call repeated after a takeover runs under a new
        # claim, so the lease token tells its deltas apart as a new attempt.
        data = {"turn": delta.turn, "attempt": self.claim.lease_token, "text": delta.text}
        self.wakeups.delta(self.run.id, data)

    async def checkpoint(self, state: RunState, events: list[RunEvent]) -> None:
        await self.store(state, event_records(events))

    async def store(self, state: RunState, records: list[EventRecord]) -> None:
        """Write the state, its events, and on a rest its status with the lifecycle event;
        through database faults, until it is stored or the lease is found lost."""
        records = [*self._unsaved, *records]
        stamp = now()
        await self.wakeups.flush_deltas()
        saved: Saved | None
        if self.direct is not None and _only_the_runs_rows(self.run, state):
            saved = await self.retry(lambda: self._write_directly(state, records, stamp))
        else:
            # A write that locks a session too keeps its lock order (session, then run) alone.
            alone = state.status.ended and self.run.session_id is not None
            write = partial(self._write, state, records, stamp)
            saved = await self.retry(lambda: self.commits(write, self.run, alone=alone))
        if saved is None:
            # Cancelled while the turn ran: it must not park (an approval UI would show calls
            # of a cancelled run). The driver stores `cancelled` with these events.
            self._unsaved = records
            self.cancel_requested = True
            return
        self._unsaved = []
        self.cancel_requested = saved.cancel_requested

    def _progress(self, state: RunState, records: list[EventRecord]) -> Progress:
        return Progress(
            state_json(state, self.run.state),
            state.current_agent,
            state.turns,
            moved_on=any(name in PROGRESS for name, _ in records),
        )

    async def _write_directly(
        self, state: RunState, records: list[EventRecord], stamp: datetime
    ) -> Saved:
        """`_write` for a checkpoint that writes only the run's own rows, in one statement."""
        assert self.direct is not None
        saved = await self.direct.checkpoint(
            self.claim,
            self.run,
            records,
            stamp,
            progress=self._progress(state, records),
            rest=_rest_of(state),
        )
        if saved is None:
            raise LeaseLost(f"run {self.run.id} is no longer held by this executor")
        return saved

    async def _write(
        self, state: RunState, records: list[EventRecord], stamp: datetime, session: AsyncSession
    ) -> Saved | None:
        """One attempt of `store`, in a transaction it may share with other runs' writes; None
        when a cancelled run was not parked."""
        run = self.run
        progress = self._progress(state, records)
        rest = _rest_of(state)
        ends_session = state.status.ended and run.session_id is not None
        if ends_session:
            # Session before run, the lock order of every path that takes both.
            assert run.session_id is not None
            await SessionRepository(session, run.tenant).ensure(run.session_id, stamp)
        parking = state.status is RunStatus.PENDING_APPROVAL
        if parking and await RunRepository(session, EVERY_TENANT).cancel_requested(run.id):
            return None
        saved = await RunLifecycle(session).checkpoint(
            self.claim, run, records, stamp, progress=progress, rest=rest
        )
        if saved is None:
            raise LeaseLost(f"run {run.id} is no longer held by this executor")
        if saved.earlier:
            return saved  # that attempt's transaction wrote the rest as well
        if ends_session:
            await save_to_session(session, run, state)
        await _track_approvals(session, run, state, stamp)
        if rest is not None:
            await outbox.enqueue(session, run, stamp)
        return saved


def _only_the_runs_rows(run: Run, state: RunState) -> bool:
    """Whether storing the state writes the run's own rows only: not a session's (a session
    run's history and end), not approval requests (parked, or withdrawn at the end of a run
    that had decisions), not a webhook delivery (a rest of a run with a webhook)."""
    if run.session_id is not None or state.status is RunStatus.PENDING_APPROVAL:
        return False
    return not (state.status.ended and (state.decisions or run.webhook is not None))


def _rest_of(state: RunState) -> Rest | None:
    """Where the engine left the run, when that is a rest."""
    if state.status is RunStatus.RUNNING:
        return None
    error = {"code": state.error.code, "message": state.error.message} if state.error else None
    return Rest(state.status, error, state.final_output)


LAST_MESSAGES = 5

# Events that mean a run moved on: a model answer or a tool result was stored.
PROGRESS = frozenset({"message", "tool_call.completed"})


async def _track_approvals(
    session: AsyncSession, run: Run, state: RunState, stamp: datetime
) -> None:
    """Parked: list its pending calls for `GET /approvals`; ended: they leave the list."""
    approvals = ApprovalRepository(session, Tenancy(run.tenant))
    if state.status is RunStatus.PENDING_APPROVAL:
        pending = [asdict(request) for request in state.pending_approvals]
        await approvals.add_pending(
            run.id, run.tenant, pending, state.messages[-LAST_MESSAGES:], stamp
        )
    elif state.status.ended and state.decisions:
        # A run lists approvals only by parking, and runs again only once they are decided:
        # one that never had a decision has nothing to withdraw.
        await approvals.withdraw(run.id)
