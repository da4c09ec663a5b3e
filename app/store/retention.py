"""What retention forgets (contract, "Data lifecycle"): ended runs, idle sessions and old
idempotency keys past their age, of every tenant, a batch at a time. Each batch locks the rows it
takes with SKIP LOCKED, in the order every other path takes them (a run before its keys, a
session before its runs), so it never waits on a request nor deadlocks with one.

Repositories never commit: the caller's scope does."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, delete, exists, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.erasure import Erasure
from app.store.models import IdempotencyKey, Run, Session
from app.store.status import UNFINISHED
from app.store.tenancy import EVERY_TENANT


class Retention:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def forget_runs(self, status: str, before: datetime, limit: int) -> int:
        """Forget up to `limit` runs of `status` that ended before `before`, each with
        everything of it, as `DELETE /runs/{id}` does."""
        due = (
            select(Run.id)
            .where(Run.status == status, Run.finished_at < before)
            .order_by(Run.finished_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return await Erasure(self.session, EVERY_TENANT).runs(list(await self.session.scalars(due)))

    async def forget_sessions(self, before: datetime, limit: int) -> int:
        """Forget up to `limit` sessions (with their messages) unchanged since `before`,
        whose runs have all ended before it."""
        due = (
            select(Session.tenant, Session.id)
            .where(Session.updated_at < before, ~_has_recent_run(before))
            .order_by(Session.updated_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        keys = [tuple(row) for row in await self.session.execute(due)]
        if not keys:
            return 0
        # Asked again now that the sessions are locked: a run created in one just before the
        # lock was taken is seen by this statement (READ COMMITTED), and no other can be
        # created while the lock is held.
        deleted = await self.session.execute(
            delete(Session).where(
                tuple_(Session.tenant, Session.id).in_(keys), ~_has_recent_run(before)
            )
        )
        return int(getattr(deleted, "rowcount", 0))

    async def forget_idempotency_keys(self, before: datetime, limit: int) -> int:
        """Forget up to `limit` idempotency keys reserved before `before`."""
        columns = (
            IdempotencyKey.tenant,
            IdempotencyKey.owner,
            IdempotencyKey.scope,
            IdempotencyKey.key,
        )
        due = (
            select(*columns)
            .where(IdempotencyKey.created_at < before)
            .order_by(IdempotencyKey.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        deleted = await self.session.execute(
            delete(IdempotencyKey).where(tuple_(*columns).in_(due))
        )
        return int(getattr(deleted, "rowcount", 0))


def _has_recent_run(since: datetime) -> ColumnElement[bool]:
    """The session has a run that has not ended, or ended at `since` or later."""
    return exists().where(
        Run.tenant == Session.tenant,
        Run.session_id == Session.id,
        or_(Run.status.in_(UNFINISHED), Run.finished_at >= since),
    )
