"""Liveness and readiness, for load balancers and orchestrators (`HEAD` answers too)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServicesDep, problems
from app.api.errors import RETRY_SOON, ApiError
from app.api.schemas import Health
from app.services.lifecycle import now
from app.store.database import DatabaseFull, unavailable_cause

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", responses=problems(500, 503))
async def readyz(services: ServicesDep) -> Health:
    """The database answers and takes a write."""
    try:
        await services.db.check_writable(now())
    except DatabaseFull as exc:
        raise ApiError(503, f"Not ready: {exc}.", headers=RETRY_SOON) from exc
    except Exception as exc:
        cause = unavailable_cause(exc) or f"the database refused a write ({type(exc).__name__})"
        raise ApiError(503, f"Not ready: {cause}.", headers=RETRY_SOON) from exc
    return Health(status="ready")


# Probes often send HEAD; the SDKs need no second operation for it.
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)
