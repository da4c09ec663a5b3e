"""All SQL about idempotency keys: a tenant's, per caller."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import IdempotencyKey


class IdempotencyRepository:
    def __init__(self, session: AsyncSession, tenant: str) -> None:
        self.session = session
        self.tenant = tenant

    async def get(
        self, owner: str, scope: str, key: str, *, for_update: bool = False
    ) -> IdempotencyKey | None:
        query = select(IdempotencyKey).where(
            IdempotencyKey.tenant == self.tenant,
            IdempotencyKey.owner == owner,
            IdempotencyKey.scope == scope,
            IdempotencyKey.key == key,
        )
        if for_update:
            query = query.with_for_update()
        result: IdempotencyKey | None = await self.session.scalar(query)
        return result

    async def reserve(
        self, owner: str, scope: str, key: str, request_hash: str, now: datetime
    ) -> bool:
        """Insert the key unbound; False when it exists already."""
        row = IdempotencyKey(
            tenant=self.tenant,
            owner=owner,
            scope=scope,
            key=key,
            request_hash=request_hash,
            run_id=None,
            created_at=now,
        )
        try:
            async with self.session.begin_nested():
                self.session.add(row)
        except IntegrityError:
            return False
        return True

    async def bind(self, owner: str, scope: str, key: str, run_id: str) -> None:
        row = await self.get(owner, scope, key)
        if row is not None:
            row.run_id = run_id

    async def release(self, owner: str, scope: str, key: str) -> None:
        await self.session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.tenant == self.tenant,
                IdempotencyKey.owner == owner,
                IdempotencyKey.scope == scope,
                IdempotencyKey.key == key,
            )
        )
