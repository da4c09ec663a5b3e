"""All SQL about webhook deliveries."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from app.store import signals
from app.store.models import WebhookDelivery


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        run_id: str,
        tenant: str,
        url: str,
        event: str,
        payload: dict[str, Any],
        now: datetime,
    ) -> None:
        """Store a delivery of `event`, due now, in the caller's transaction (the one that
        stores the rest it reports)."""
        self.session.add(
            WebhookDelivery(
                id=f"whd_{uuid.uuid4().hex}",
                run_id=run_id,
                tenant=tenant,
                event=event,
                url=url,
                payload=payload,
                status="pending",
                attempts=[],
                next_attempt_at=now,
                created_at=now,
                delivered_at=None,
            )
        )
        signals.record(self.session, signals.DeliveriesQueued())

    async def claim_due(
        self, now: datetime, *, limit: int, hold_until: datetime
    ) -> Sequence[WebhookDelivery]:
        """Take up to `limit` deliveries due now, holding each until `hold_until` (a sender
        that dies mid-try leaves it to be tried again then)."""
        due = (
            select(WebhookDelivery.seq)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        seqs = list(await self.session.scalars(due))
        if not seqs:
            return []
        await self.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.seq.in_(seqs))
            .values(next_attempt_at=hold_until)
        )
        claimed = select(WebhookDelivery).where(WebhookDelivery.seq.in_(seqs))
        return list(await self.session.scalars(claimed))

    async def record(
        self,
        delivery: WebhookDelivery,
        attempts: list[dict[str, Any]],
        *,
        status: str,
        next_attempt_at: datetime | None,
        delivered_at: datetime | None,
    ) -> bool:
        """Write a try's outcome while the sender's claim still holds (its hold unchanged);
        False when the hold had lapsed and the delivery was claimed again."""
        result = await self.session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery.id,
                WebhookDelivery.next_attempt_at == delivery.next_attempt_at,
            )
            .values(
                attempts=attempts,
                status=status,
                next_attempt_at=next_attempt_at,
                delivered_at=delivered_at,
            )
            .returning(WebhookDelivery.seq)
        )
        return result.first() is not None

    async def of_runs(self, run_ids: Sequence[str]) -> dict[str, list[WebhookDelivery]]:
        if not run_ids:
            return {}
        query = (
            select(WebhookDelivery)
            .where(WebhookDelivery.run_id.in_(run_ids))
            .order_by(WebhookDelivery.seq)
            .options(defer(WebhookDelivery.payload))  # a whole run each: not shown, not read
        )
        found: defaultdict[str, list[WebhookDelivery]] = defaultdict(list)
        for delivery in await self.session.scalars(query):
            found[delivery.run_id].append(delivery)
        return found
