"""The runs service: what the API asks of runs and sessions. Routes stay thin; SQL stays in
repositories; each public method is one transaction (or a short series of them)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from app.engine import Engine, RunConfig
from app.engine.engine import input_messages
from app.engine.errors import RunEnded
from app.engine.principal import Principal
from app.engine.state import RunStatus, RunTool
from app.resources import RunOut
from app.services.callers import Caller
from app.services.errors import (
    RunNotEnded,
    RunNotFound,
    SessionBusy,
    SessionNotFound,
    TooManyRuns,
)
from app.services.idempotency import Idempotency, once
from app.services.lifecycle import cancel_resting_run, now
from app.store.database import Database
from app.store.direct import DirectReads, DirectWrites, NeedsSession
from app.store.erasure import Erasure
from app.store.lifecycle import RunLifecycle
from app.store.models import Run, Session, WebhookDelivery
from app.store.runs import RunRepository
from app.store.sessions import SessionRepository
from app.store.status import ENDED, RESTING
from app.store.tenancy import EVERY_TENANT, Tenancy, lock_tenant
from app.store.wakeups import Delta, Stored, Wakeups
from app.store.webhooks import WebhookRepository

IfBusy = Literal["enqueue", "reject", "interrupt"]

CREATE_SCOPE = "runs.create"

# Rows forgotten per transaction when a tenant is erased: short transactions, few locks held.
ERASURE_BATCH = 500


@dataclass(frozen=True)
class NewRun:
    agent: str
    input: str | list[dict[str, Any]]
    tools: list[RunTool] = field(default_factory=list)
    session_id: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    config: RunConfig = field(default_factory=RunConfig)
    metadata: dict[str, Any] = field(default_factory=dict)
    if_busy: IfBusy = "enqueue"
    webhook: str | None = None
    output_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class Erased:
    """What erasing a tenant forgot: its runs (each with everything of it), its sessions and
    the idempotency keys no run held."""

    runs: int
    sessions: int
    idempotency_keys: int


@dataclass(frozen=True)
class SessionView:
    session: Session
    messages: list[dict[str, Any]]


def new_run_id() -> str:
    return f"run_{secrets.token_hex(12)}"


def _new_run(new: NewRun, creator: Principal, stamp: datetime) -> Run:
    """The run as created, of its creator's tenant, not yet stored."""
    return Run(
        id=new_run_id(),
        tenant=creator.tenant,
        principal=creator.to_json(),
        agent=new.agent,
        current_agent=new.agent,
        session_id=new.session_id,
        input=input_messages(new.input),
        tools=[asdict(spec) for spec in new.tools] or None,
        config=new.config.model_dump(mode="json"),
        context=new.context,
        run_metadata=new.metadata,
        webhook=new.webhook,
        output_schema=new.output_schema,
        state=None,
        created_at=stamp,
        updated_at=stamp,
    )


class RunService:
    def __init__(
        self,
        db: Database,
        engine: Engine,
        wakeups: Wakeups,
        *,
        max_active_runs: int | None = None,
        idempotency_key_ttl: timedelta | None = None,
    ) -> None:
        self.db = db
        self.engine = engine
        self.wakeups = wakeups
        # TENANT_MAX_ACTIVE_RUNS: a tenant's queued and running runs at most.
        self.max_active_runs = max_active_runs
        self.idempotency_key_ttl = idempotency_key_ttl
        # A new run that is the whole of its transaction is one statement on PostgreSQL.
        self.direct = None if db.is_sqlite else DirectWrites(db)
        self.reads = None if db.is_sqlite else DirectReads(db)

    async def create(
        self, new: NewRun, caller: Caller, idempotency: Idempotency | None = None
    ) -> tuple[Run, bool]:
        """The run, of the caller's own tenant, and whether it was created now (False: an
        idempotent repeat)."""
        self.engine.agents.get(new.agent)  # an unknown agent is refused before anything is stored
        self.engine.check_run_tools(new.tools)
        alone = new.session_id is None and idempotency is None and self.max_active_runs is None
        if self.direct is not None and alone:
            stamp = now()
            run = _new_run(new, caller.principal, stamp)
            await self.direct.create(run, stamp)
            return run, True

        async def insert(session: AsyncSession) -> Run:
            return await self._insert(session, new, caller.principal)

        return await once(
            self.db, CREATE_SCOPE, idempotency, insert, caller.tenancy, ttl=self.idempotency_key_ttl
        )

    async def _insert(self, session: AsyncSession, new: NewRun, creator: Principal) -> Run:
        tenant = creator.tenant
        runs = RunRepository(session, Tenancy(tenant))
        stamp = now()
        if new.session_id is not None:
            await SessionRepository(session, tenant).ensure(new.session_id, stamp)
            await self._make_way(session, runs, tenant, new.session_id, new.if_busy)
        if self.max_active_runs is not None:
            await lock_tenant(session, tenant)
            active = await runs.active_count(tenant)
            if active >= self.max_active_runs:
                raise TooManyRuns(
                    f"tenant {tenant!r} has {active} queued and running runs, "
                    f"the most it may have (TENANT_MAX_ACTIVE_RUNS)"
                )
        run = _new_run(new, creator, stamp)
        await RunLifecycle(session).create(run, stamp)
        return run

    async def _make_way(
        self,
        session: AsyncSession,
        runs: RunRepository,
        tenant: str,
        session_id: str,
        if_busy: IfBusy,
    ) -> None:
        """Apply `if_busy`: cancel the session's unfinished runs (running ones only flagged),
        or refuse."""
        if if_busy == "enqueue":
            return
        unfinished = await runs.unfinished_in_session(tenant, session_id, for_update=True)
        if unfinished and if_busy == "reject":
            ids = ", ".join(run.id for run in unfinished)
            raise SessionBusy(f"session {session_id!r} has unfinished runs: {ids}")
        for run in unfinished:
            await self._cancel_locked(session, run)

    async def get(self, run_id: str, caller: Caller) -> Run:
        return await self._get(run_id, caller.tenancy)

    async def _get(self, run_id: str, tenancy: Tenancy) -> Run:
        if self.reads is not None:
            with contextlib.suppress(NeedsSession):
                return self._found(run_id, await self.reads.run(run_id, tenancy))
        async with self.db.read_scope() as session:
            run = await RunRepository(session, tenancy).get(run_id)
        return self._found(run_id, run)

    @staticmethod
    def _found(run_id: str, run: Run | None) -> Run:
        if run is None:
            raise RunNotFound(f"no run has id {run_id!r}")
        return run

    async def page(
        self,
        caller: Caller,
        *,
        statuses: Sequence[str],
        agent: str | None,
        session_id: str | None,
        before_seq: int | None,
        limit: int,
    ) -> list[Run]:
        async with self.db.read_scope() as session:
            return await RunRepository(session, caller.tenancy).page(
                statuses=statuses,
                agent=agent,
                session_id=session_id,
                before_seq=before_seq,
                limit=limit,
            )

    async def cancel(self, run_id: str, caller: Caller) -> Run:
        """Cancel now when queued or parked; ask the driving executor when running."""
        async with self.db.session_scope() as session:
            runs = RunRepository(session, caller.tenancy)
            run = await runs.get(run_id)
            if run is None:
                raise RunNotFound(f"no run has id {run_id!r}")
            if run.session_id is not None:
                # Session before run, the lock order of every path that takes both.
                await SessionRepository(session, run.tenant).get(run.session_id, for_update=True)
            run = await runs.get(run_id, for_update=True, refresh=True)
            assert run is not None
            if run.status in ENDED:
                raise RunEnded(f"run {run_id} has already ended ({run.status})")
            await self._cancel_locked(session, run)
        return run

    async def delete(self, run_id: str, caller: Caller) -> None:
        """Forget an ended run and everything of it, in one transaction."""
        async with self.db.session_scope() as session:
            run = await RunRepository(session, caller.tenancy).get(run_id, for_update=True)
            if run is None:
                raise RunNotFound(f"no run has id {run_id!r}")
            if run.status not in ENDED:
                raise RunNotEnded(
                    f"run {run_id} has not ended ({run.status}): cancel it first, then delete it"
                )
            await Erasure(session, caller.tenancy).runs([run_id])

    async def _cancel_locked(self, session: AsyncSession, run: Run) -> None:
        """Cancel a locked run: at once when it rests, by its executor when it runs (told at
        once, whichever process it is in, and by the stored flag at its next heartbeat)."""
        if run.status == RunStatus.RUNNING:
            await RunLifecycle(session).request_cancel(run, now())
        else:
            await cancel_resting_run(session, self.engine, run)

    async def wait_until_resting(self, run: Run, seconds: float) -> Run:
        """The run once it rests (ended or pending approval), or as it is after `seconds`.

        `run` must be as read or written just now, with no await since: a change heard of
        while its read was under way (this process's own, or another's found by
        `poll_changes`) is told to the watch at once.
        """
        if seconds <= 0:
            return run
        with self.wakeups.watch(run.id, run.event_seq) as watch, anyio.move_on_after(seconds):
            # A stopping process answers now rather than hold its shutdown.
            while run.status not in RESTING and not self.wakeups.closing:
                change = await watch.next()
                # Text deltas, and changes known not to be a rest, need no read of the run.
                # A stopping process's close() wakes every watcher with a status unknown.
                while not self._may_have_rested(change):
                    change = await watch.next()
                run = await self._get(run.id, Tenancy(run.tenant))
        return run

    def _may_have_rested(self, change: Stored | Delta) -> bool:
        """Whether a watcher's notice calls for reading the run (or answering now)."""
        if self.wakeups.closing:
            return True
        return isinstance(change, Stored) and change.status in (None, *RESTING)

    async def shown(self, runs: Sequence[Run]) -> list[RunOut]:
        """The runs (found through a caller's tenancy) as the API shows them, with their
        webhook deliveries."""
        with_webhook = [run.id for run in runs if run.webhook is not None]
        deliveries: dict[str, list[WebhookDelivery]] = {}
        if with_webhook:
            async with self.db.read_scope() as session:
                deliveries = await WebhookRepository(session).of_runs(with_webhook)
        return [RunOut.of(run, deliveries.get(run.id, ())) for run in runs]

    async def show(self, run: Run) -> RunOut:
        """One run as the API shows it."""
        [shown] = await self.shown([run])
        return shown

    async def get_session(self, session_id: str, caller: Caller) -> SessionView:
        async with self.db.read_scope() as session:
            sessions = SessionRepository(session, caller.home)
            found = await sessions.get(session_id)
            if found is None:
                raise SessionNotFound(f"no session has id {session_id!r}")
            return SessionView(found, await sessions.messages(session_id))

    async def delete_session(
        self, session_id: str, caller: Caller, *, forget_runs: bool = False
    ) -> None:
        """Forget the session's conversation, and with `forget_runs` its runs too (each with
        everything of it), in one transaction; refused while a run of it has not ended."""
        tenant = caller.home
        async with self.db.session_scope() as session:
            sessions = SessionRepository(session, tenant)
            if await sessions.get(session_id, for_update=True) is None:
                raise SessionNotFound(f"no session has id {session_id!r}")
            runs = RunRepository(session, Tenancy(tenant))
            unfinished = await runs.unfinished_in_session(tenant, session_id)
            if unfinished:
                ids = ", ".join(run.id for run in unfinished)
                raise SessionBusy(f"session {session_id!r} has unfinished runs: {ids}")
            if forget_runs:
                erasure = Erasure(session, Tenancy(tenant))
                await erasure.runs(await erasure.run_ids_of_session(tenant, session_id))
            await sessions.delete(session_id)

    async def erase_tenant(self, tenant: str) -> Erased:
        """Forget every ended run, every session and every idempotency key of the tenant, in
        batches, each its own transaction (a big tenant's rows are never held at once); refused
        while a run of it has not ended. Repeating it after a failure part way goes on."""
        async with self.db.read_scope() as session:
            unfinished = await Erasure(session, EVERY_TENANT).unfinished_of_tenant(tenant)
        if unfinished:
            raise RunNotEnded(
                f"tenant {tenant!r} has {unfinished} runs that have not ended: cancel them first"
            )
        runs = await self._in_batches(Erasure.some_runs_of_tenant, tenant)
        sessions = await self._in_batches(Erasure.some_sessions_of_tenant, tenant)
        async with self.db.session_scope() as session:
            keys = await Erasure(session, EVERY_TENANT).keys_of_tenant(tenant)
        return Erased(runs=runs, sessions=sessions, idempotency_keys=keys)

    async def _in_batches(
        self, forget: Callable[[Erasure, str, int], Awaitable[int]], tenant: str
    ) -> int:
        """`forget` a batch at a time, each in its own transaction, until a batch comes up
        short; how many rows went."""
        total = 0
        while True:
            async with self.db.session_scope() as session:
                forgotten = await forget(Erasure(session, EVERY_TENANT), tenant, ERASURE_BATCH)
            total += forgotten
            if forgotten < ERASURE_BATCH:
                return total
