"""One process's runtime, built once from its settings: what `serve` and `worker` both run.

The database (and SQLite's file lock), the schema, the agents and the engine, the wake-up hub
with its channel, the services the API calls, the executor, the webhook sender and the purger;
then the tasks that follow other processes (PostgreSQL), drive runs, send webhooks and delete
what is past its retention, until it stops:
the executor hands its runs back first, while the channel still tells other executors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import structlog

from app.engine import Engine
from app.runtime.agents import AgentsModule, AgentsModuleError, build_engine, load_agents_module
from app.services.approvals import ApprovalService
from app.services.lifecycle import now
from app.services.runs import RunService
from app.services.streams import RunEventStream
from app.settings import Settings
from app.store.channels import DeltaChannel
from app.store.database import Database, DatabaseInUse
from app.store.leases import Leases
from app.store.migrations import SchemaNotReady, ensure_schema
from app.store.wakeups import Wakeups, store_changes
from app.webhooks.policy import WebhookPolicy
from app.webhooks.sender import WebhookSender
from app.worker.executor import Executor, worker_name
from app.worker.retention import Purger, RetentionPolicy

log = structlog.get_logger("app.runtime")


@dataclass
class Runtime:
    """What one process runs. `executor` is None in an API-only process."""

    settings: Settings
    db: Database
    engine: Engine
    wakeups: Wakeups
    runs: RunService
    approvals: ApprovalService
    events: RunEventStream
    executor: Executor | None
    webhook_policy: WebhookPolicy
    serves_api: bool

    @classmethod
    @asynccontextmanager
    async def running(
        cls,
        settings: Settings,
        *,
        agents_module: AgentsModule | None = None,
        executor: bool = True,
        serves_api: bool = True,
        on_watchers: Callable[[int], None] | None = None,
    ) -> AsyncIterator[Runtime]:
        """Build the runtime, run its tasks while the block runs, then stop them in order.
        `on_watchers` hears how many watchers the hub has each time it changes."""
        db = Database(settings.database_url, pool_size=settings.database_pool_size)
        try:
            try:
                db.claim_sqlite_file()
                await ensure_schema(db)
                module = agents_module or load_agents_module(settings.agents_module)
            except (DatabaseInUse, SchemaNotReady, AgentsModuleError) as exc:
                log.error("startup.refused", reason=str(exc))
                raise
            if db.is_sqlite and executor:
                await _take_over_from_the_dead(db)
            name = worker_name()
            channel = None if db.is_sqlite else DeltaChannel(db, name)
            wakeups = Wakeups(
                channel, follow_deltas=serves_api, follow_work=executor, on_watchers=on_watchers
            )
            db.on_commit = wakeups.deliver
            engine = build_engine(settings, module)
            async with _connected(engine, settings):
                runtime = cls(
                    settings,
                    db,
                    engine,
                    wakeups,
                    RunService(
                        db,
                        engine,
                        wakeups,
                        max_active_runs=settings.tenant_max_active_runs,
                        idempotency_key_ttl=settings.idempotency_key_ttl,
                    ),
                    ApprovalService(db, engine, idempotency_key_ttl=settings.idempotency_key_ttl),
                    RunEventStream(db, wakeups),
                    _executor(settings, db, engine, wakeups, name) if executor else None,
                    WebhookPolicy(settings.webhook_allowed_hosts),
                    serves_api,
                )
                async with anyio.create_task_group() as group:
                    following = anyio.CancelScope()
                    if channel is not None:
                        group.start_soon(runtime._follow_other_processes, channel, following)
                    if runtime.executor is not None:
                        group.start_soon(runtime.executor.run)
                        group.start_soon(runtime._sender().run)
                        group.start_soon(_purger(settings, db).run)
                    yield runtime
                    if runtime.executor is not None:
                        runtime.executor.stop()
                        await runtime.executor.stopped.wait()
                    # The sender and the channel outlive the hand-back: other executors hear of
                    # the runs handed back at once.
                    following.cancel()
                    group.cancel_scope.cancel()
        finally:
            await db.dispose()

    def stop(self) -> None:
        """Stop taking runs and hand back the ones held (the `running` block then ends)."""
        if self.executor is not None:
            self.executor.stop()

    async def _follow_other_processes(
        self, channel: DeltaChannel, scope: anyio.CancelScope
    ) -> None:
        with scope:
            async with anyio.create_task_group() as followers:
                followers.start_soon(channel.run)
                if self.serves_api:  # its watchers hear of other processes' writes
                    interval = self.settings.watch_poll_seconds
                    read = store_changes(self.db)
                    followers.start_soon(self.wakeups.poll_changes, read, interval)

    def _sender(self) -> WebhookSender:
        settings = self.settings
        secret = settings.webhook_secret
        return WebhookSender(
            self.db,
            self.wakeups,
            self.webhook_policy,
            secret=secret.get_secret_value().encode() if secret is not None else b"",
            max_attempts=settings.webhook_max_attempts,
            retry_seconds=settings.webhook_retry_seconds,
            timeout_seconds=settings.webhook_timeout_seconds,
            poll_interval=settings.poll_interval_seconds,
        )


def _executor(
    settings: Settings, db: Database, engine: Engine, wakeups: Wakeups, name: str
) -> Executor:
    return Executor(
        db,
        engine,
        wakeups,
        concurrency=settings.concurrency,
        poll_interval=settings.poll_interval_seconds,
        lease_seconds=settings.lease_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        shutdown_grace=settings.shutdown_grace_seconds,
        max_takeovers=settings.max_takeovers,
        name=name,
    )


def _purger(settings: Settings, db: Database) -> Purger:
    policy = RetentionPolicy(
        runs=settings.run_retention,
        sessions=settings.session_retention,
        idempotency_keys=settings.idempotency_key_ttl,
    )
    return Purger(
        db,
        policy,
        interval=settings.retention_interval_seconds,
        batch=settings.retention_batch_size,
    )


async def _take_over_from_the_dead(db: Database) -> None:
    """This process holds the SQLite file's lock, so whoever held a run's lease has died (a
    kill -9, a crash): its runs are taken over now rather than when their leases expire."""
    async with db.session_scope() as session:
        orphans = await Leases(session).expire_leases(now())
    if orphans:
        log.info("runs.orphans_taken_over", count=orphans)


@asynccontextmanager
async def _connected(engine: Engine, settings: Settings) -> AsyncIterator[Engine]:
    """The engine with its MCP servers connected, closed at the end; a start whose agents end
    up with two tools of one name (once the servers listed theirs) is refused."""
    try:
        await engine.connect()
    except ValueError as exc:
        await engine.aclose()
        error = AgentsModuleError(f"AGENTS_MODULE={settings.agents_module!r}: {exc}")
        log.error("startup.refused", reason=str(error))
        raise error from exc
    except BaseException:
        # Stopped while connecting: the servers' connections close all the same.
        with anyio.CancelScope(shield=True):
            await engine.aclose()
        raise
    try:
        yield engine
    finally:
        await engine.aclose()
