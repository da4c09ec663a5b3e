"""`GET /metrics`: this process's Prometheus metrics, and the store's gauges read now."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import ServicesDep
from app.observability.metrics import observe_store
from app.services.lifecycle import now
from app.store.runs import RunRepository
from app.store.tenancy import EVERY_TENANT

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(services: ServicesDep) -> Response:
    """Prometheus text format: runs by status, the queue, turn, model-call and tool-call
    latency, tool outcomes, takeovers and webhook deliveries."""
    async with services.db.read_scope() as session:
        runs = RunRepository(session, EVERY_TENANT)
        counts = await runs.status_counts()
        queue = await runs.queue()
    observe_store(counts, queue, now())
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
