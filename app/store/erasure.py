"""Forgetting runs (contract, "Data lifecycle"): a run and everything of it goes in one
statement per table. Its messages, steps, events, approval requests and webhook deliveries go
with it (their foreign keys cascade); the idempotency keys bound to it are deleted here. A
session keeps the messages a run added to it: forgetting them is forgetting the session.

Repositories never commit: the caller's scope does."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import IdempotencyKey, Run, Session
from app.store.status import ENDED, UNFINISHED
from app.store.tenancy import Tenancy


class Erasure:
    """Deletes rows of the tenants `tenancy` admits: any other is left alone."""

    def __init__(self, session: AsyncSession, tenancy: Tenancy) -> None:
        self.session = session
        self.tenancy = tenancy

    async def runs(self, run_ids: Sequence[str]) -> int:
        """Forget these runs; how many there were. The caller makes sure they have ended."""
        if not run_ids:
            return 0
        await self.session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.run_id.in_(run_ids), self.tenancy.admits(IdempotencyKey.tenant)
            )
        )
        deleted = await self.session.execute(
            delete(Run).where(Run.id.in_(run_ids), self.tenancy.admits(Run.tenant))
        )
        return int(getattr(deleted, "rowcount", 0))

    async def run_ids_of_session(self, tenant: str, session_id: str) -> list[str]:
        query = select(Run.id).where(
            Run.tenant == tenant, Run.session_id == session_id, self.tenancy.admits(Run.tenant)
        )
        return list(await self.session.scalars(query))

    async def unfinished_of_tenant(self, tenant: str) -> int:
        """How many of the tenant's runs have not ended."""
        query = select(func.count()).where(Run.tenant == tenant, Run.status.in_(UNFINISHED))
        return int(await self.session.scalar(query) or 0)

    async def some_runs_of_tenant(self, tenant: str, limit: int) -> int:
        """Forget up to `limit` of the tenant's ended runs (one created meanwhile is left
        alone), each with everything of it."""
        query = (
            select(Run.id)
            .where(Run.tenant == tenant, Run.status.in_(ENDED))
            .order_by(Run.seq)
            .limit(limit)
        )
        return await self.runs(list(await self.session.scalars(query)))

    async def some_sessions_of_tenant(self, tenant: str, limit: int) -> int:
        """Forget up to `limit` of the tenant's sessions (their messages go with them)."""
        ids = select(Session.id).where(Session.tenant == tenant).limit(limit).scalar_subquery()
        deleted = await self.session.execute(
            delete(Session).where(Session.tenant == tenant, Session.id.in_(ids))
        )
        return int(getattr(deleted, "rowcount", 0))

    async def keys_of_tenant(self, tenant: str) -> int:
        """Forget the tenant's idempotency keys that no run holds (those of refused requests)."""
        deleted = await self.session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.tenant == tenant)
        )
        return int(getattr(deleted, "rowcount", 0))
