"""The outbox: a run's rest and the delivery that reports it, stored in one transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.resources import RunOut
from app.store.models import Run
from app.store.webhooks import WebhookRepository

RESTING_EVENTS = frozenset({"run.completed", "run.failed", "run.cancelled", "run.pending_approval"})


async def enqueue(session: AsyncSession, run: Run, stamp: datetime) -> None:
    """Store the delivery of the rest the run has just come to, when it has a webhook; the
    caller's transaction stores it with the rest itself."""
    event = f"run.{run.status}"
    if run.webhook is None or event not in RESTING_EVENTS:
        return
    # The run as it rested; its deliveries are the receiver's own business, not in the body.
    shown = RunOut.of(run).model_dump(mode="json", exclude={"webhook_deliveries"})
    body = {"event": event, "run": shown}
    await WebhookRepository(session).add(run.id, run.tenant, run.webhook, event, body, stamp)
