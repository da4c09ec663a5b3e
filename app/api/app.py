"""The app factory: build everything in the lifespan, never at import time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

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
    me,
    metrics,
    runs,
    sessions,
    tenants,
)
from app.api.streams import Frames, StreamSlots
from app.runtime import Runtime
from app.runtime.agents import AgentsModule
from app.settings import Settings

DESCRIPTION = """Run LLM agents as durable REST resources: create a run, poll it or wait for it,
decide the tool calls that need a human, cancel it. Errors are `application/problem+json`."""


def begin_shutdown(app: FastAPI) -> None:
    """The server stops taking requests: answer held `?wait` requests now. Safe to call from
    a signal handler, and before the app has started."""
    begin = getattr(app.state, "begin_shutdown", None)
    if begin is not None:
        begin()


def create_app(
    settings: Settings | None = None,
    *,
    agents_module: AgentsModule | None = None,
    with_executor: bool = True,
    on_watchers: Callable[[int], None] | None = None,
) -> FastAPI:
    """The service. `with_executor=False` serves the API only (workers run elsewhere);
    `on_watchers` hears how many watchers the process has each time it changes."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Runtime.running(
            settings,
            agents_module=agents_module,
            executor=with_executor,
            on_watchers=on_watchers,
        ) as runtime:
            app.state.begin_shutdown = partial(
                asyncio.get_running_loop().call_soon_threadsafe, runtime.wakeups.close
            )
            app.state.services = Services(
                settings,
                runtime.db,
                runtime.engine,
                runtime.runs,
                runtime.approvals,
                runtime.events,
                runtime.wakeups,
                runtime.executor,
                runtime.webhook_policy,
                StreamSlots(settings.max_streams_per_client),
                Frames(),
            )
            yield

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
    secured = (runs, events, approvals, agents, sessions, tenants, me, metrics, docs)
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
