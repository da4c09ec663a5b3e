"""Request dependencies: what the app built at start, handed to routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request

from app.api.auth import principal_of
from app.api.schemas import Problem
from app.api.streams import Frames, StreamSlots
from app.engine import Engine
from app.engine.principal import TENANT_PATTERN
from app.services.approvals import ApprovalService
from app.services.callers import Caller
from app.services.runs import RunService
from app.services.streams import RunEventStream
from app.settings import Settings
from app.store.database import Database
from app.store.wakeups import Wakeups
from app.webhooks.policy import WebhookPolicy
from app.worker.executor import Executor


@dataclass
class Services:
    """Everything the lifespan builds, once per app."""

    settings: Settings
    db: Database
    engine: Engine
    runs: RunService
    approvals: ApprovalService
    events: RunEventStream
    wakeups: Wakeups
    executor: Executor | None
    webhook_policy: WebhookPolicy
    stream_slots: StreamSlots
    frames: Frames


# Dependencies are `async def`: FastAPI runs plain functions in its thread pool, a hop per request.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_runs(request: Request) -> RunService:
    return (await get_services(request)).runs


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_approvals(request: Request) -> ApprovalService:
    return (await get_services(request)).approvals


def caller_name(request: Request) -> str | None:
    """Who is calling, for `decided_by`: the principal's name, set by authentication."""
    name = getattr(request.state, "caller", None)
    return name if isinstance(name, str) else None


def client_of(request: Request) -> str:
    """Who holds what a client may hold a bounded number of: its API key's name, or its address
    on an open service (behind a proxy, the proxy's, unless the server is told to trust the
    proxy's forwarded address)."""
    name = caller_name(request)
    if name is not None:
        return f"caller {getattr(request.state, 'tenant', '')}/{name}"
    return f"address {request.client.host if request.client else 'unknown'}"


async def get_caller(
    request: Request,
    tenant: Annotated[
        str | None,
        Query(
            pattern=TENANT_PATTERN,
            max_length=64,
            description="Admins: that tenant's resources only (a session id names one of that "
            "tenant's sessions). Others see their own tenant's only.",
        ),
    ] = None,
) -> Caller:
    """Who calls, and whose runs, sessions and approvals it may touch."""
    return Caller.of(principal_of(request), tenant)


CallerDep = Annotated[Caller, Depends(get_caller)]
RunsDep = Annotated[RunService, Depends(get_runs)]
ApprovalsDep = Annotated[ApprovalService, Depends(get_approvals)]


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the problem answers a route gives (see `app.api.openapi`)."""
    return {status: {"model": Problem} for status in statuses}
