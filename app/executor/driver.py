"""Driving one claimed run: load it, advance the engine turn by turn, store every checkpoint."""

from __future__ import annotations

import enum
import uuid

import anyio
import structlog

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


class RunDriver:
    def __init__(self, db: Database, engine: Engine, wakeups: Wakeups, claim: Claim) -> None:
        self.db = db
        self.engine = engine
        self.wakeups = wakeups
        self.claim = claim
        self.log = log.bind(run_id=claim.run_id)
        self._scope = anyio.CancelScope()
        self._stop_reason: StopReason | None = None

    def stop(self, reason: StopReason) -> None:
        """Abandon the model call or tool in flight at its next await."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._scope.cancel()

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
            if self._stop_reason is not None and state is not None and observer is not None:
                await self._stopped(state, observer)
        except LeaseLost:
            self.log.warning("run.lease_lost")
        except Exception as exc:
            error_id = uuid.uuid4().hex
            self.log.exception("run.crashed", error_id=error_id)
            if state is not None and observer is not None and not state.status.ended:
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
            if not await RunRepository(session).save_fenced(self.claim, values, records, now()):
                raise LeaseLost(f"run {run.id} is no longer held by this executor")
        self.log.info("run.started", agent=run.agent, turns=state.turns)
        return run, state

    async def _advance(self, state: RunState, observer: StoreObserver) -> None:
        while state.status is RunStatus.RUNNING:
            result = await self.engine.advance(state, observer)
            if not isinstance(result.outcome, RunAgain | HandedOff):
                self.log.info("run.rested", status=state.status.value, turns=state.turns)
                return

    async def _stopped(self, state: RunState, observer: StoreObserver) -> None:
        with anyio.CancelScope(shield=True):
            if self._stop_reason is StopReason.CANCEL and not state.status.ended:
                records = event_records(self.engine.cancel(state))
                await observer.store(state, records)
                self.log.info("run.cancelled")
            elif self._stop_reason is StopReason.SHUTDOWN:
                await self._release()

    async def _release(self) -> None:
        """Hand the run back to the queue from its last stored state, for any executor."""
        async with self.db.session_scope() as session:
            values = {"status": Status.QUEUED, "claimed_by": None, "lease_expires_at": None}
            await RunRepository(session).save_fenced(self.claim, values, [], now())
        self.wakeups.work_available()
        self.log.info("run.released")

    async def _fail(
        self, state: RunState, observer: StoreObserver, exc: Exception, error_id: str
    ) -> None:
        error = RunError("internal_error", f"internal error {error_id}: {type(exc).__name__}")
        records = event_records(self.engine.fail(state, error))
        with anyio.CancelScope(shield=True):
            try:
                await observer.store(state, records)
            except Exception:
                self.log.exception("run.fail_not_stored", error_id=error_id)
