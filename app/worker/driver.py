"""Driving one claimed run: load it, advance the engine turn by turn, store every checkpoint."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable

import anyio
import structlog
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.engine import Engine, RunConfig, RunState, RunStatus
from app.engine.events import message
from app.engine.outcomes import goes_on
from app.engine.state import Message, RunError, RunTool
from app.observability.tracing import run_span
from app.services.errors import LeaseLost
from app.services.lifecycle import event_records, now
from app.store.database import Database, is_transient
from app.store.direct import DirectWrites
from app.store.events import EventRecord
from app.store.leases import Claim
from app.store.lifecycle import FencedWrites, Progress, Rest, RunLifecycle, Saved
from app.store.models import Run
from app.store.runs import RunRepository
from app.store.sessions import SessionRepository
from app.store.tenancy import EVERY_TENANT, acting_for
from app.store.wakeups import Wakeups
from app.webhooks import outbox
from app.worker.commits import GroupCommit
from app.worker.observer import StoreObserver
from app.worker.retry import Retrier

log = structlog.get_logger("app.worker")


class StopReason(enum.Enum):
    """Why a driver was told to stop before its run rests."""

    CANCEL = "cancel"  # the run was cancelled: it ends `cancelled`
    SHUTDOWN = "shutdown"  # this process stops: the run goes back to the queue
    LEASE_LOST = "lease_lost"  # another executor took the run over: write nothing more


def raised(exc: BaseException, matches: Callable[[BaseException], bool]) -> bool:
    """Whether `exc` matches, alone or inside a task group (concurrent tool calls)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = exc.subgroup(lambda e: not isinstance(e, BaseExceptionGroup) and matches(e))
        return leaves is not None
    return matches(exc)


def lease_lost(exc: BaseException) -> bool:
    return raised(exc, lambda e: isinstance(e, LeaseLost))


History = tuple[list[Message], int]
"""Messages of a session, and the place in it of the first."""
NO_HISTORY: History = ([], 0)


async def session_history(session: AsyncSession, run: Run) -> History:
    """What a new run of a session starts with: its newest messages, as many as the run's
    model may see (the engine cuts them at a turn's edge), read without the older ones."""
    if run.state is not None or run.session_id is None:
        return NO_HISTORY
    limit = RunConfig.model_validate(run.config).max_history_messages
    return await SessionRepository(session, run.tenant).newest(run.session_id, limit)


class RunDriver:
    def __init__(
        self,
        db: Database,
        engine: Engine,
        wakeups: Wakeups,
        claim: Claim,
        *,
        commits: GroupCommit,
        lease_seconds: float,
        max_takeovers: int,
        worker: str | None = None,
        direct: DirectWrites | None = None,
    ) -> None:
        self.db = db
        self.engine = engine
        self.wakeups = wakeups
        self.claim = claim
        self.commits = commits
        # PostgreSQL: the run's writes that touch only its own rows, one statement each.
        self.direct = direct
        self.max_takeovers = max_takeovers
        # Which executor drove the run, in each of its lines: after takeovers, there were several.
        self.log = log.bind(run_id=claim.run_id, worker=worker)
        # A cancel is still stored through faults; a handed-back or lost run is left as is.
        self.retry = Retrier(
            self.log,
            within_seconds=lease_seconds,
            stopping=lambda: self._stop_reason in (StopReason.SHUTDOWN, StopReason.LEASE_LOST),
        )
        self._scope = anyio.CancelScope()
        self._stop_reason: StopReason | None = None
        self._draining = False
        self._run: Run | None = None
        # The run and its state when `start_in` started it, with the runs claimed beside it.
        self._started: tuple[Run, RunState] | None = None
        self._reload = False  # the claim's copy of the run is not to be trusted
        self.lost_lease = False  # a write of this driver was refused: another owns the run

    def stop(self, reason: StopReason) -> None:
        """Abandon the model call or tool in flight at its next await."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._scope.cancel()

    @property
    def in_session(self) -> bool:
        """Whether the run belongs to a session (whose next run waits for this one to rest)."""
        return self._run is not None and self._run.session_id is not None

    def drain(self) -> None:
        """Let the turn in flight finish, then hand the run back (a graceful shutdown)."""
        self._draining = True

    async def drive(self) -> None:
        with run_span(self.claim.run_id):
            await self._drive()

    async def _drive(self) -> None:
        state: RunState | None = None
        observer: StoreObserver | None = None
        try:
            with self._scope:
                if self._started is not None:
                    run, loaded = self._started
                    self._run = run
                    self._log_start(run, loaded)
                else:
                    with anyio.CancelScope(shield=True):  # a short load; stopping waits for it
                        run, history = await self.retry(self._load)
                        if self.claim.takeovers > self.max_takeovers and not run.cancel_requested:
                            await self._give_up(run)
                            return
                        loaded = await self._start(run, history)
                state = loaded
                observer = StoreObserver(
                    self.commits, self.wakeups, self.claim, run, self.retry, self.direct
                )
                if run.cancel_requested:
                    self.stop(StopReason.CANCEL)
                await self._advance(loaded, observer)
            if state is None or observer is None or self._stop_reason is StopReason.LEASE_LOST:
                return
            if observer.cancel_requested and state.status is RunStatus.PENDING_APPROVAL:
                # Cancelled by another process while its last turn ran: it must not park.
                self._stop_reason = StopReason.CANCEL
            await self._wind_down(state, observer)
        except Exception as exc:
            if lease_lost(exc):
                self.lost_lease = True
                self.log.warning("run.lease_lost", token=self.claim.lease_token)
                return
            if raised(exc, is_transient):
                # Retried as long as the lease lasts (or until stopped): the run is left to
                # its lease, and whoever claims it next goes on from its last stored turn.
                self.log.warning("run.left_to_lease", error=type(exc).__name__)
                return
            error_id = uuid.uuid4().hex
            self.log.exception("run.crashed", error_id=error_id)
            await self._fail(state, observer, exc, error_id)

    async def _load(self) -> tuple[Run, History]:
        """The run (as claimed, when the claim carries it), and the session's history when
        the run has not started yet."""
        run = None if self._reload else self.claim.run
        if run is not None and (run.state is not None or run.session_id is None):
            self._run = run
            return run, NO_HISTORY
        async with self.db.session_scope() as session:
            run = await RunRepository(session, EVERY_TENANT).get(self.claim.run_id)
            if run is None:
                raise LeaseLost(f"run {self.claim.run_id} vanished")
            history = await session_history(session, run)
        self._run = run
        return run, history

    async def start_in(self, session: AsyncSession) -> None:
        """Start the claimed run in `session`'s transaction, which starts other runs too. A
        run this cannot start (its agent is gone, its takeovers past the bound) is left to
        `drive`, which reports it in a transaction of its own."""
        run = self.claim.run
        if run is None or self.claim.takeovers > self.max_takeovers:
            return
        history = await session_history(session, run)
        await self._start_with(RunLifecycle(session), run, history)

    @property
    def starts_directly(self) -> bool:
        """Whether the run's start writes only its own rows (no session), in one statement."""
        run = self.claim.run
        return run is not None and self._direct_for(run) is not None

    async def start_directly(self) -> None:
        """`start_in` for a run that `starts_directly`, in a statement of its own."""
        run = self.claim.run
        assert run is not None
        direct = self._direct_for(run)
        assert direct is not None
        if self.claim.takeovers <= self.max_takeovers:
            await self._start_with(direct, run, NO_HISTORY)

    def _direct_for(self, run: Run) -> DirectWrites | None:
        """How the run's writes of its own rows alone go in one statement: on PostgreSQL, for
        a run of no session."""
        return self.direct if run.session_id is None else None

    async def _start_with(self, writes: FencedWrites, run: Run, history: History) -> None:
        try:
            state, progress, records = self._opening(run, history)
        except Exception:
            return
        saved = await writes.start(
            self.claim, run, progress, records, now(), first=run.state is None
        )
        if saved is not None:
            self._started = (run, state)

    def start_undone(self) -> None:
        """The transaction of `start_in` failed: `drive` starts the run, read anew (the
        claim's copy may hold what was not stored, or the start may have been stored after
        all, its commit in doubt)."""
        self._started = None
        self._reload = True

    def _opening(self, run: Run, history: History) -> tuple[RunState, Progress, list[EventRecord]]:
        """The engine state a new run starts with (and its first events), or the one it resumes."""
        if run.state is not None:
            state = RunState.from_json(run.state)
            return state, Progress(state.to_json(), state.current_agent, state.turns), []
        state = self.engine.start(
            run.agent,
            run.input,
            history=history[0],
            history_from=history[1],
            config=RunConfig.model_validate(run.config),
            tools=[RunTool(**spec) for spec in run.tools or []],
            variables=run.context,
            run_id=run.id,
            session_id=run.session_id,
            output_schema=run.output_schema,
        )
        records = [(e.name, e.data) for e in map(message, state.new_messages)]
        return state, Progress(state.to_json(), state.current_agent, state.turns), records

    async def _start(self, run: Run, history: History) -> RunState:
        """Give a new run its engine state (with the session's history), or resume one."""
        first = run.state is None
        state, progress, records = self._opening(run, history)

        async def start() -> None:
            saved: Saved | None
            direct = self._direct_for(run)
            if direct is not None:
                saved = await direct.start(self.claim, run, progress, records, now(), first=first)
            else:
                async with self.db.session_scope() as session:
                    saved = await RunLifecycle(session).start(
                        self.claim, run, progress, records, now(), first=first
                    )
            if saved is None:
                raise LeaseLost(f"run {self.claim.run_id} is no longer held by this executor")

        await self.retry(start)
        self._log_start(run, state)
        return state

    def _log_start(self, run: Run, state: RunState) -> None:
        self.log.info(
            "run.started", agent=run.agent, turns=state.turns, takeovers=self.claim.takeovers
        )

    async def _give_up(self, run: Run) -> None:
        """A run whose executors keep getting lost mid-turn (it may be what kills them) ends
        `failed` instead of taking every executor down in turn."""
        takeovers = self.claim.takeovers
        self.log.error("run.poisoned", takeovers=takeovers, max_takeovers=self.max_takeovers)
        error = RunError(
            "internal_error",
            f"the run was taken over {takeovers} times after its executor was lost "
            f"(limit {self.max_takeovers}); it may be what stops its executors",
        )
        state = RunState.from_json(run.state) if run.state is not None else None
        if state is None:
            await self._fail_unloaded(run, error)
            return
        observer = StoreObserver(
            self.commits, self.wakeups, self.claim, run, self.retry, self.direct
        )
        await observer.store(state, event_records(self.engine.fail(state, error)))

    async def _advance(self, state: RunState, observer: StoreObserver) -> None:
        principal = acting_for(observer.run)
        while state.status is RunStatus.RUNNING and not self._draining:
            result = await self.engine.advance(state, observer, principal=principal)
            if not goes_on(result.outcome):
                self.log.info("run.rested", status=state.status.value, turns=state.turns)
                return

    async def _wind_down(self, state: RunState, observer: StoreObserver) -> None:
        """After the loop: end a cancelled run, or hand back one this process stops driving."""
        with anyio.CancelScope(shield=True):
            if self._stop_reason is StopReason.CANCEL and not state.status.ended:
                await observer.store(state, event_records(self.engine.cancel(state)))
                self.log.info("run.cancelled")
            elif state.status is RunStatus.RUNNING:  # stopped or drained mid-run
                await self.retry(lambda: self._hand_back(observer.run))
                self.log.info("run.released")

    async def _hand_back(self, run: Run) -> None:
        """Back to the queue from its last stored state: another process takes it at once."""
        async with self.db.session_scope() as session:
            await RunLifecycle(session).hand_back(self.claim, run, now())

    async def _fail(
        self,
        state: RunState | None,
        observer: StoreObserver | None,
        exc: Exception,
        error_id: str,
    ) -> None:
        """End the run `failed` with `internal_error` at once: it would only fail again. That
        holds for a write the database refuses (not an outage, which `is_transient` tells
        apart): another executor would be refused the same."""
        if self._run is None:
            return
        error = RunError("internal_error", _failure_message(exc, error_id))
        with anyio.CancelScope(shield=True):
            try:
                if state is not None and observer is not None:
                    if not state.status.ended:
                        await observer.store(state, event_records(self.engine.fail(state, error)))
                    return
            except SQLAlchemyError:
                # The state holds what the database refused: store only the run's end.
                self.log.warning("run.fail_without_state", error_id=error_id)
            except Exception:
                self.log.exception("run.fail_not_stored", error_id=error_id)
                return
            try:
                await self._fail_unloaded(self._run, error)
            except Exception:
                self.log.exception("run.fail_not_stored", error_id=error_id)

    async def _fail_unloaded(self, run: Run, error: RunError) -> None:
        """End a run whose state could not be started (its agent is gone, say), or stored."""
        rest = Rest(RunStatus.FAILED, {"code": error.code, "message": error.message})

        async def fail() -> None:
            stamp = now()
            async with self.db.session_scope() as session:
                saved = await RunLifecycle(session).checkpoint(
                    self.claim, run, [], stamp, rest=rest
                )
                if saved is None:
                    raise LeaseLost(f"run {self.claim.run_id} is no longer held by this executor")
                if not saved.earlier:
                    await outbox.enqueue(session, run, stamp)

        await self.retry(fail)


def _failure_message(exc: Exception, error_id: str) -> str:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        refusal = exc.orig.__cause__ or exc.orig  # the driver's own, beneath SQLAlchemy's adapter
        reason = (str(refusal).strip().splitlines() or [type(refusal).__name__])[0][:300]
        return f"internal error {error_id}: the database refused to store the run ({reason})"
    return f"internal error {error_id}: {type(exc).__name__}"
