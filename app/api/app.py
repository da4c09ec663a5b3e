"""The app factory: build everything in the lifespan, never at import time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
import structlog
from fastapi import FastAPI

from app.api import errors
from app.api.auth import Authenticated, Keys
from app.api.deps import Services, problems
from app.api.middleware import BodyTimeout, LimitBody, RefuseNul, RequestLog
from app.api.openapi import problem_openapi
from app.api.routes import (
    agents,
    approvals,
    console,
    docs,
    events,
    health,
    metrics,
    runs,
    sessions,
)
from app.api.streams import StreamSlots
from app.executor.agents import (
    AgentsModule,
    AgentsModuleError,
    build_engine,
    load_agents_module,
)
from app.executor.approvals import ApprovalService
from app.executor.lifecycle import now
from app.executor.service import RunService
from app.executor.streams import RunEventStream
from app.executor.wakeups import Wakeups
from app.executor.webhooks import WebhookPolicy
from app.executor.worker import Executor, worker_name
from app.settings import Settings
from app.store.channels import DeltaChannel
from app.store.database import Database, DatabaseInUse
from app.store.leases import Leases
from app.store.migrations import SchemaNotReady, ensure_schema

log = structlog.get_logger("app.api")

DESCRIPTION = """Run LLM agents as durable REST resources: create a run, poll it or wait for it,
decide the tool calls that need a human, cancel it. Errors are `application/problem+json`."""


def begin_shutdown(app: FastAPI) -> None:
    """The server stops taking requests: answer held `?wait` requests now. Safe to call from
    a signal handler, and before the app has started."""
    begin = getattr(app.state, "begin_shutdown", None)
    if begin is not None:
        begin()


async def take_over_from_the_dead(db: Database) -> None:
    """This process holds the SQLite file's lock, so whoever held a run's lease has died (a
    kill -9, a crash): its runs are taken over now rather than when their leases expire."""
    async with db.session_scope() as session:
        orphans = await Leases(session).expire_leases(now())
    if orphans:
        log.info("runs.orphans_taken_over", count=orphans)


def create_app(
    settings: Settings | None = None,
    *,
    agents_module: AgentsModule | None = None,
    with_executor: bool = True,
) -> FastAPI:
    """The service. `with_executor=False` serves the API only (workers run elsewhere)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_url, pool_size=settings.database_pool_size)
        try:
            try:
                db.claim_sqlite_file()
                await ensure_schema(db)
                module = agents_module or load_agents_module(settings.agents_module)
            except (DatabaseInUse, SchemaNotReady, AgentsModuleError) as exc:
                log.error("startup.refused", reason=str(exc))
                raise
            if db.is_sqlite and with_executor:
                await take_over_from_the_dead(db)
            engine = build_engine(settings, module)
            wakeups = Wakeups()
            db.on_commit = wakeups.deliver
            executor = (
                Executor.from_settings(db, engine, wakeups, settings) if with_executor else None
            )
            app.state.begin_shutdown = partial(
                asyncio.get_running_loop().call_soon_threadsafe, wakeups.close
            )
            app.state.services = Services(
                settings,
                db,
                engine,
                RunService(db, engine, wakeups),
                ApprovalService(db, engine),
                RunEventStream(db, wakeups),
                wakeups,
                executor,
                WebhookPolicy(settings.webhook_allowed_hosts),
                StreamSlots(settings.max_streams_per_client),
            )
            # Other processes write too on PostgreSQL: follow their changes and deltas.
            if not db.is_sqlite:
                wakeups.channel = DeltaChannel(
                    db,
                    worker_name(),
                    wakeups.local_delta,
                    on_cancel=wakeups.cancel_requested if with_executor else None,
                    on_work=wakeups.work_hinted if with_executor else None,
                )
            listening = anyio.CancelScope()

            async def follow_other_processes(channel: DeltaChannel) -> None:
                with listening:
                    async with anyio.create_task_group() as followers:
                        followers.start_soon(wakeups.poll_changes, db, settings.watch_poll_seconds)
                        followers.start_soon(channel.run)

            async with anyio.create_task_group() as group:
                if wakeups.channel is not None:
                    group.start_soon(follow_other_processes, wakeups.channel)
                if executor is not None:
                    group.start_soon(executor.run)
                yield
                if executor is not None:
                    executor.stop()
                    # The channel outlives the hand-back: it tells other executors at once.
                    await executor.stopped.wait()
                listening.cancel()
            await engine.aclose()
        finally:
            await db.dispose()

    app = FastAPI(
        title="agent-runs",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served by routes.docs instead, behind the API keys like every other route.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        # Route names as operation ids give generated SDKs methods like `create_run`.
        generate_unique_id_function=lambda route: route.name,
    )
    app.openapi = lambda: problem_openapi(app)  # type: ignore[method-assign]
    errors.install(app)
    app.state.keys = Keys.from_settings(settings)
    secured = (runs, events, approvals, agents, sessions, metrics, docs)
    for router in (module.router for module in secured):
        app.include_router(router, dependencies=[Authenticated], responses=problems(401))
    app.include_router(health.router)  # probes carry no key
    if settings.console:
        # Static files with no data in them: they load without a key, then ask for one.
        app.include_router(console.build_router())
    app.add_middleware(LimitBody, max_bytes=settings.max_request_bytes)
    app.add_middleware(BodyTimeout, seconds=settings.request_body_timeout_seconds)
    app.add_middleware(RefuseNul)
    app.add_middleware(RequestLog)
    return app
