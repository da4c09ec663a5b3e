"""All SQL about sessions and their stored conversations. A session is one tenant's: its id
names it within the tenant the repository is made for."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import Session, SessionMessage


class SessionRepository:
    def __init__(self, session: AsyncSession, tenant: str) -> None:
        self.session = session
        self.tenant = tenant

    async def get(self, session_id: str, *, for_update: bool = False) -> Session | None:
        query = select(Session).where(Session.tenant == self.tenant, Session.id == session_id)
        if for_update:
            query = query.with_for_update()
        result: Session | None = await self.session.scalar(query)
        return result

    async def ensure(self, session_id: str, now: datetime) -> Session:
        """The session, created if new, and locked so its runs are created one at a time."""
        found = await self.get(session_id, for_update=True)
        if found is not None:
            return found
        try:
            async with self.session.begin_nested():
                self.session.add(
                    Session(tenant=self.tenant, id=session_id, created_at=now, updated_at=now)
                )
        except IntegrityError:
            pass  # created by a concurrent request a moment ago
        created = await self.get(session_id, for_update=True)
        assert created is not None
        return created

    async def messages(self, session_id: str) -> list[dict[str, Any]]:
        query = (
            select(SessionMessage.message)
            .where(SessionMessage.tenant == self.tenant, SessionMessage.session_id == session_id)
            .order_by(SessionMessage.position)
        )
        return list(await self.session.scalars(query))

    async def newest(self, session_id: str, limit: int | None) -> tuple[list[dict[str, Any]], int]:
        """The session's newest `limit` messages (every one when None), in order, and the
        place of the first (the number of messages when none is given)."""
        if limit is None:
            return await self.messages(session_id), 0
        of_session = (SessionMessage.tenant == self.tenant, SessionMessage.session_id == session_id)
        rows = (
            await self.session.execute(
                select(SessionMessage.position, SessionMessage.message)
                .where(*of_session)
                .order_by(SessionMessage.position.desc())
                .limit(limit)
            )
        ).all()
        if rows:
            return [message for _, message in reversed(rows)], rows[-1][0]
        last = await self.session.scalar(
            select(func.max(SessionMessage.position)).where(*of_session)
        )
        return [], 0 if last is None else last + 1

    async def append(
        self, session_id: str, messages: Sequence[dict[str, Any]], run_id: str, now: datetime
    ) -> None:
        """Add messages at the end of the conversation; the session row must be locked."""
        if not messages:
            return
        last = await self.session.scalar(
            select(func.max(SessionMessage.position)).where(
                SessionMessage.tenant == self.tenant, SessionMessage.session_id == session_id
            )
        )
        start = 0 if last is None else last + 1
        rows = [
            {
                "tenant": self.tenant,
                "session_id": session_id,
                "position": start + i,
                "message": message,
                "run_id": run_id,
                "created_at": now,
            }
            for i, message in enumerate(messages)
        ]
        await self.session.execute(insert(SessionMessage), rows)
        session = await self.get(session_id)
        if session is not None:
            session.updated_at = now

    async def delete(self, session_id: str) -> None:
        await self.session.execute(
            delete(Session).where(Session.tenant == self.tenant, Session.id == session_id)
        )
