"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServicesDep, problems
from app.api.errors import ApiError
from app.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", responses=problems(500, 503))
async def readyz(services: ServicesDep) -> Health:
    """The database answers."""
    try:
        await services.db.ping()
    except Exception as exc:
        raise ApiError(503, f"the database does not answer: {type(exc).__name__}") from exc
    return Health(status="ready")
