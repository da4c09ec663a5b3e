"""All SQL about approval requests: the calls of parked runs that wait for a human."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import Approval
from app.store.tenancy import Tenancy


class ApprovalRepository:
    """Approval requests of the tenants `tenancy` admits."""

    def __init__(self, session: AsyncSession, tenancy: Tenancy) -> None:
        self.session = session
        self.tenancy = tenancy

    async def add_pending(
        self,
        run_id: str,
        tenant: str,
        requests: Sequence[dict[str, Any]],
        last_messages: list[dict[str, Any]],
        now: datetime,
    ) -> None:
        """Record the run's pending calls; a call asked again (in doubt after a crash) is
        pending again, with what it is asked now."""
        known = {
            approval.call_id: approval
            for approval in await self.session.scalars(
                select(Approval).where(
                    Approval.run_id == run_id, self.tenancy.admits(Approval.tenant)
                )
            )
        }
        for request in requests:
            asked_again = known.get(request["call_id"])
            if asked_again is not None:
                if asked_again.status != "pending":
                    asked_again.status = "pending"
                    asked_again.decision = None
                    asked_again.in_doubt = request["in_doubt"]
                    asked_again.kind = request["kind"]
                    asked_again.arguments = request["arguments"]
                    asked_again.reason = request.get("reason")
                    asked_again.requested_at = now
                    asked_again.last_messages = last_messages
                continue
            self.session.add(
                Approval(
                    run_id=run_id,
                    tenant=tenant,
                    call_id=request["call_id"],
                    tool=request["tool"],
                    agent=request["agent"],
                    kind=request["kind"],
                    arguments=request["arguments"],
                    reason=request.get("reason"),
                    in_doubt=request["in_doubt"],
                    status="pending",
                    requested_at=now,
                    decision=None,
                    last_messages=last_messages,
                )
            )

    async def decide(self, run_id: str, decisions: Sequence[dict[str, Any]]) -> None:
        """Attach each decision (the run's `decisions` item) to its request."""
        for decision in decisions:
            await self.session.execute(
                update(Approval)
                .where(
                    Approval.run_id == run_id,
                    Approval.call_id == decision["call_id"],
                    self.tenancy.admits(Approval.tenant),
                )
                .values(status="decided", decision=decision)
            )

    async def withdraw(self, run_id: str) -> None:
        """A cancelled run's pending requests leave the list."""
        await self.session.execute(
            delete(Approval).where(
                Approval.run_id == run_id,
                Approval.status == "pending",
                self.tenancy.admits(Approval.tenant),
            )
        )

    async def page(
        self,
        *,
        statuses: Sequence[str],
        agent: str | None,
        tool: str | None,
        run_id: str | None,
        before_seq: int | None,
        limit: int,
        kind: str | None = None,
    ) -> list[Approval]:
        query = (
            select(Approval)
            .where(self.tenancy.admits(Approval.tenant))
            .order_by(Approval.seq.desc())
            .limit(limit)
        )
        if statuses:
            query = query.where(Approval.status.in_(statuses))
        if agent is not None:
            query = query.where(Approval.agent == agent)
        if tool is not None:
            query = query.where(Approval.tool == tool)
        if run_id is not None:
            query = query.where(Approval.run_id == run_id)
        if kind is not None:
            query = query.where(Approval.kind == kind)
        if before_seq is not None:
            query = query.where(Approval.seq < before_seq)
        return list(await self.session.scalars(query))
