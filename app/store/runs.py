"""Reading runs and their events. Every write of a run is `app.store.lifecycle`'s.

Repositories never commit: the caller's scope does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    case,
    exists,
    func,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from app.engine.state import RunStatus
from app.store.conversation import expand
from app.store.events import expand_events
from app.store.models import Run, StoredEvent
from app.store.status import UNFINISHED
from app.store.tenancy import Tenancy

# Above any run's seq: the upper end of a page's range when it starts from the newest run.
_SEQ_UNBOUNDED = 2**62


def waits_for_its_session() -> Any:
    """A run of a session waits while an earlier run of that session is unfinished."""
    earlier = aliased(Run)
    return exists().where(
        earlier.session_id == Run.session_id,
        earlier.tenant == Run.tenant,
        earlier.seq < Run.seq,
        earlier.status.in_(UNFINISHED),
    )


@dataclass(frozen=True, slots=True)
class Queue:
    """The queued runs: those an executor may claim now (and since when the oldest of them
    waits), and those that wait for an earlier run of their session to rest."""

    claimable: int
    oldest_claimable_at: datetime | None
    waiting_for_session: int


class RunRepository:
    """Runs of the tenants `tenancy` admits: any other is not found."""

    def __init__(self, session: AsyncSession, tenancy: Tenancy) -> None:
        self.session = session
        self.tenancy = tenancy

    async def get(
        self, run_id: str, *, for_update: bool = False, refresh: bool = False
    ) -> Run | None:
        """The run; `refresh` re-reads a run this session already loaded (after a lock wait)."""
        query = select(Run).where(Run.id == run_id, self.tenancy.admits(Run.tenant))
        if for_update:
            query = query.with_for_update()
        if refresh:
            query = query.execution_options(populate_existing=True)
        result: Run | None = await self.session.scalar(query)
        if result is not None:
            await expand(self.session, [result])
        return result

    async def page(
        self,
        *,
        statuses: Sequence[str] = (),
        agent: str | None = None,
        session_id: str | None = None,
        before_seq: int | None = None,
        limit: int,
    ) -> list[Run]:
        """Newest first; `before_seq` continues after the last run of the previous page."""
        filters: list[tuple[InstrumentedAttribute[Any], str]] = []
        if len(statuses) == 1:
            filters.append((Run.status, statuses[0]))
        if agent is not None:
            filters.append((Run.agent, agent))
        if session_id is not None:
            filters.append((Run.session_id, session_id))
        if self.tenancy.tenant is not None:
            filters.append((Run.tenant, self.tenancy.tenant))
        before = _SEQ_UNBOUNDED if before_seq is None else before_seq
        query = select(Run).limit(limit)
        if filters:
            # The newest runs of one status (agent, session) are a range of its (column, seq)
            # index, walked backwards. Given `column = value` instead, PostgreSQL reads the
            # newest runs of any kind and filters them: it takes values to be spread evenly
            # over `seq`, and 100,000 parked runs under 1,000,000 finished ones took a second.
            (column, value), others = filters[0], filters[1:]
            query = query.where(
                tuple_(column, Run.seq) > tuple_(value, 0),
                tuple_(column, Run.seq) < tuple_(value, before),
                *(other == wanted for other, wanted in others),
            ).order_by(column.desc(), Run.seq.desc())
        else:
            query = query.where(Run.seq < before).order_by(Run.seq.desc())
        if len(statuses) > 1:
            query = query.where(Run.status.in_(statuses))
        runs = list(await self.session.scalars(query))
        await expand(self.session, runs)
        return runs

    async def unfinished_in_session(
        self, tenant: str, session_id: str, *, for_update: bool = False
    ) -> list[Run]:
        query = (
            select(Run)
            .where(
                Run.tenant == tenant,
                Run.session_id == session_id,
                Run.status.in_(UNFINISHED),
                self.tenancy.admits(Run.tenant),
            )
            .order_by(Run.seq)
        )
        if for_update:
            query = query.with_for_update()
        runs = list(await self.session.scalars(query))
        await expand(self.session, runs)
        return runs

    async def cancel_requested(self, run_id: str) -> bool:
        """Whether a cancel was asked for, with the run's row locked until the commit."""
        query = (
            select(Run.cancel_requested)
            .where(Run.id == run_id, self.tenancy.admits(Run.tenant))
            .with_for_update()
        )
        return bool(await self.session.scalar(query))

    async def status_counts(self) -> dict[str, int]:
        """How many runs the store holds in each status (every status, zeros included)."""
        result = await self.session.execute(
            select(Run.status, func.count())
            .where(self.tenancy.admits(Run.tenant))
            .group_by(Run.status)
        )
        counts = {status.value: 0 for status in RunStatus}
        for status, count in result.all():
            counts[status] = count
        return counts

    async def queue(self) -> Queue:
        """The queue as the claim sees it: a queued run behind an unfinished run of its session
        (one parked for a person, say) is not claimable, and waits legitimately."""
        waits = waits_for_its_session()
        claimable_since = case((waits, None), else_=Run.updated_at)
        result = await self.session.execute(
            select(
                func.count(claimable_since),
                func.min(claimable_since),
                func.count(case((waits, 1))),
            ).where(Run.status == RunStatus.QUEUED, self.tenancy.admits(Run.tenant))
        )
        claimable, oldest, waiting = result.one()
        return Queue(claimable, oldest, waiting)

    async def active_count(self, tenant: str) -> int:
        """How many of the tenant's runs are queued or running."""
        query = select(func.count()).where(
            Run.tenant == tenant,
            Run.status.in_((RunStatus.QUEUED, RunStatus.RUNNING)),
            self.tenancy.admits(Run.tenant),
        )
        return int(await self.session.scalar(query) or 0)

    async def events_after(
        self, run_id: str, after_seq: int, *, limit: int, max_bytes: int | None = None
    ) -> list[StoredEvent]:
        """The run's events after `after_seq`, in order: at most `limit`, and no more than
        `max_bytes` of JSON (but always the first), so a page of large tool outputs is never
        held whole."""
        owned = self._owned(run_id)
        query = (
            select(StoredEvent)
            .where(StoredEvent.run_id == run_id, StoredEvent.seq > after_seq, owned)
            .order_by(StoredEvent.seq)
            .limit(limit)
        )
        if max_bytes is None:
            return await self._expanded(query)
        sized = (
            select(
                StoredEvent.id,
                func.sum(StoredEvent.size).over(order_by=StoredEvent.seq).label("through"),
            )
            .where(StoredEvent.run_id == run_id, StoredEvent.seq > after_seq, owned)
            .order_by(StoredEvent.seq)
            .limit(limit)
            .subquery()
        )
        # Added up from the sizes stored beside the events: no event's data is read unless kept.
        first = select(func.min(sized.c.through)).scalar_subquery()
        kept = select(sized.c.id).where(or_(sized.c.through <= max_bytes, sized.c.through == first))
        query = select(StoredEvent).where(StoredEvent.id.in_(kept)).order_by(StoredEvent.seq)
        return await self._expanded(query)

    def _owned(self, run_id: str) -> ColumnElement[bool]:
        """Whether the run is one this repository admits, for rows that do not name a tenant."""
        if self.tenancy.tenant is None:
            return true()
        return exists().where(Run.id == run_id, self.tenancy.admits(Run.tenant))

    async def _expanded(self, query: Select[StoredEvent]) -> list[StoredEvent]:
        events = list(await self.session.scalars(query))
        await expand_events(self.session, events)
        return events

    async def tenant_of(self, run_id: str) -> str | None:
        """The run's tenant, or None for a run this repository does not admit."""
        query = select(Run.tenant).where(Run.id == run_id, self.tenancy.admits(Run.tenant))
        found: str | None = await self.session.scalar(query)
        return found

    async def progress(self, run_id: str) -> tuple[int, str, int] | None:
        """The run's last event id, status and turns: what a watcher needs after a change,
        without reading the run's state."""
        result = await self.session.execute(
            select(Run.event_seq, Run.status, Run.turns).where(
                Run.id == run_id, self.tenancy.admits(Run.tenant)
            )
        )
        row = result.one_or_none()
        return None if row is None else (row.event_seq, row.status, row.turns)

    async def event_seqs(self, run_ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        """The last event id and the status of each run: what changed since a watcher last
        looked."""
        result = await self.session.execute(
            select(Run.id, Run.event_seq, Run.status).where(
                Run.id.in_(run_ids), self.tenancy.admits(Run.tenant)
            )
        )
        return {run_id: (seq, status) for run_id, seq, status in result.all()}
