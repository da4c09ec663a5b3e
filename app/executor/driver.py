"""Driving one claimed run: load it, advance the engine turn by turn, store every checkpoint."""

from __future__ import annotations

import enum
import uuid

import anyio
import structlog
from sqlalchemy.exc import SQLAlchemyError

from app.engine import Engine, RunConfig, RunState, RunStatus
from app.engine.events import message
from app.engine.outcomes import HandedOff, RunAgain
from app.engine.state import RunError
from app.executor.errors import LeaseLost
from app.executor.lifecycle import event_records, lifecycle_event, now
from app.executor.observer import StoreObserver
from app.executor.wakeups import Wakeups
from app.store.database import Database
from app.store.models import Run
from app.store.runs import Claim, EventRecord, RunRepository
from app.store.sessions import SessionRepository
from app.store.status import Status

log = structlog.get_logger("app.executor")


class StopReason(enum.Enum):
    """Why a driver was told to stop before its run rests."""

    CANCEL = "cancel"  # the run was cancelled: it ends `cancelled`
    SHUTDOWN = "shutdown"  # this process stops: the run goes back to the queue


def lease_lost(exc: BaseException) -> bool:
    """True for a lost lease, alone or raised inside a task group (concurrent tool calls)."""
    if isinstance(exc, LeaseLost):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(LeaseLost) is not None


class RunDriver:
    def __init__(self, db: Database, engine: Engine, wakeups: Wakeups, claim: Claim) -> None:
        self.db = db
        self.engine = engine
        self.wakeups = wakeups
        self.claim = claim
        self.log = log.bind(run_id=claim.run_id)
        self._scope = anyio.CancelScope()
        self._stop_reason: StopReason | None = None
        self._draining = False
        self._run: Run | None = None

    def stop(self, reason: StopReason) -> None:
        """Abandon the model call or tool in flight at its next await."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._scope.cancel()

    def drain(self) -> None:
        """Let the turn in flight finish, then hand the run back (a graceful shutdown)."""
        self._draining = True

    async def drive(self) -> None:
        state: RunState | None = None
        observer: StoreObserver | None = None
        try:
            with self._scope:
                with anyio.CancelScope(shield=True):  # a short load; stopping waits for it
                    run, loaded = await self._start()
                state = loaded
                observer = StoreObserver(self.db, self.wakeups, self.claim, run)
                if run.cancel_requested:
                    self.stop(StopReason.CANCEL)
                await self._advance(loaded, observer)
            if state is None or observer is None:
                return
            if observer.cancel_requested and state.status is RunStatus.PENDING_APPROVAL:
                # Cancelled by another process while its last turn ran: it must not park.
                self._stop_reason = StopReason.CANCEL
            await self._wind_down(state, observer)
        except Exception as exc:
            if lease_lost(exc):
                self.log.warning("run.lease_lost")
                return
            error_id = uuid.uuid4().hex
            self.log.exception("run.crashed", error_id=error_id)
            await self._fail(state, observer, exc, error_id)

    async def _start(self) -> tuple[Run, RunState]:
        """Load the run; a new one gets its engine state (with the session's history)."""
        async with self.db.session_scope() as session:
            run = await RunRepository(session).get(self.claim.run_id)
            if run is None:
                raise LeaseLost(f"run {self.claim.run_id} vanished")
            history = []
            if run.state is None and run.session_id is not None:
                history = await SessionRepository(session).messages(run.session_id)
        self._run = run
        records: list[EventRecord]
        if run.state is None:
            state = self.engine.start(
                run.agent,
                run.input,
                history=history,
                config=RunConfig.model_validate(run.config),
                variables=run.context,
                run_id=run.id,
                session_id=run.session_id,
            )
            run.started_at = now()
            records = [lifecycle_event(run, "run.started", state)]
            records += [(e.name, e.data) for e in map(message, state.new_messages)]
        else:
            state = RunState.from_json(run.state)
            records = [lifecycle_event(run, "run.resumed", state)]
        async with self.db.session_scope() as session:
            values = {"state": state.to_json(), "started_at": run.started_at}
            saved = await RunRepository(session).save_fenced(self.claim, values, records, now())
            if saved is None:
                raise LeaseLost(f"run {run.id} is no longer held by this executor")
        self.wakeups.run_changed(run.id, saved.event_seq)  # watchers see it start at once
        self.log.info("run.started", agent=run.agent, turns=state.turns)
        return run, state

    async def _advance(self, state: RunState, observer: StoreObserver) -> None:
        while state.status is RunStatus.RUNNING and not self._draining:
            result = await self.engine.advance(state, observer)
            if not isinstance(result.outcome, RunAgain | HandedOff):
                self.log.info("run.rested", status=state.status.value, turns=state.turns)
                return

    async def _wind_down(self, state: RunState, observer: StoreObserver) -> None:
        """After the loop: end a cancelled run, or hand back one this process stops driving."""
        with anyio.CancelScope(shield=True):
            if self._stop_reason is StopReason.CANCEL and not state.status.ended:
                await observer.store(state, event_records(self.engine.cancel(state)))
                self.log.info("run.cancelled")
            elif state.status is RunStatus.RUNNING:  # stopped or drained mid-run
                run = observer.run
                run.status = Status.QUEUED
                async with self.db.session_scope() as session:
                    event = lifecycle_event(run, "run.queued", state)
                    await RunRepository(session).release(self.claim, event, now())
                self.wakeups.run_changed(run.id)
                self.wakeups.work_available()
                self.log.info("run.released")

    async def _fail(
        self,
        state: RunState | None,
        observer: StoreObserver | None,
        exc: Exception,
        error_id: str,
    ) -> None:
        """End the run `failed` with `internal_error`; a database outage is left to the lease
        (another try later), anything else would only fail again."""
        if isinstance(exc, SQLAlchemyError) or self._run is None:
            return
        error = RunError("internal_error", f"internal error {error_id}: {type(exc).__name__}")
        with anyio.CancelScope(shield=True):
            try:
                if state is not None and observer is not None:
                    if not state.status.ended:
                        await observer.store(state, event_records(self.engine.fail(state, error)))
                else:
                    await self._fail_unloaded(self._run, error)
            except Exception:
                self.log.exception("run.fail_not_stored", error_id=error_id)

    async def _fail_unloaded(self, run: Run, error: RunError) -> None:
        """A run whose state could not even be started (its agent is gone, say)."""
        stamp = now()
        run.status = Status.FAILED
        run.error = {"code": error.code, "message": error.message}
        values = {
            "status": Status.FAILED,
            "error": run.error,
            "finished_at": stamp,
            "claimed_by": None,
            "lease_expires_at": None,
        }
        async with self.db.session_scope() as session:
            records = [lifecycle_event(run, "run.failed")]
            await RunRepository(session).save_fenced(self.claim, values, records, stamp)
        self.wakeups.run_changed(run.id)
