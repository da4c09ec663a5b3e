"""A run's event stream: the stored events after a given id, then the live ones as they come,
with no gap and no duplicate between the two, and the model's text deltas in between."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.services.callers import Caller
from app.services.errors import RunNotFound
from app.store.database import Database
from app.store.models import StoredEvent
from app.store.runs import RunRepository
from app.store.status import ENDED
from app.store.tenancy import Tenancy
from app.store.wakeups import Delta, Wakeups

BATCH = 200
# A page of stored events holds about this much JSON at most (and always one event), so a slow
# reader of a run with large tool outputs holds one page, not the run.
PAGE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One server-sent event; deltas have no id and no time (they are never stored nor
    replayed)."""

    id: int | None
    event: str
    data: dict[str, Any]
    stored_at: datetime | None = None


class RunEventStream:
    def __init__(self, db: Database, wakeups: Wakeups) -> None:
        self.db = db
        self.wakeups = wakeups
        self._reads: dict[tuple[str, int, int], asyncio.Future[_Read]] = {}

    async def check(self, run_id: str, caller: Caller) -> Tenancy:
        """Raise `RunNotFound` before a stream is opened for nothing (or for a run of another
        tenant); the run's own tenancy, to read its events with."""
        async with self.db.read_scope() as session:
            tenant = await RunRepository(session, caller.tenancy).tenant_of(run_id)
        if tenant is None:
            raise RunNotFound(f"no run has id {run_id!r}")
        return Tenancy(tenant)

    async def events(
        self, run_id: str, tenancy: Tenancy, after: int
    ) -> AsyncIterator[list[StreamItem]]:
        """Everything after event `after`, in batches of what is there at once (a page of
        stored events, the deltas queued meanwhile); ends once the run has ended and all is
        sent. `tenancy` is the one `check` gave."""
        cursor = after
        up_to: int | None = None
        turns_sent = 0  # turns whose whole message has been sent: their deltas are stale
        # Watch before the first read: a change landing during the replay is not missed.
        with self.wakeups.watch(run_id) as watch:
            while True:
                read = await self._read(run_id, tenancy, cursor, up_to)
                if read.events:
                    cursor = read.events[-1].seq
                    yield [
                        StreamItem(event.seq, event.name, event.data, event.created_at)
                        for event in read.events
                    ]
                if read.finished:
                    return
                if read.complete:
                    turns_sent = read.turns
                if read.more:
                    continue  # more is stored already
                change = await watch.next()
                while isinstance(change, Delta):
                    deltas = [
                        StreamItem(None, "message.delta", delta.data)
                        for delta in (change, *watch.deltas_queued())
                        if delta.data["turn"] > turns_sent
                    ]
                    if deltas:
                        yield deltas
                    change = await watch.next()
                up_to = change.seq

    async def _read(self, run_id: str, tenancy: Tenancy, cursor: int, up_to: int | None) -> _Read:
        """Stored events after `cursor`, none past `up_to` (a turn's deltas come before its
        later events).

        Watchers of one run wake on the same notice and ask for the same events: one query
        answers them all. Only a read bounded by a notice's `up_to` is shared: it began after
        that event was committed, so it holds what each of them was told of; an unbounded read
        begun earlier might not. It runs as a task of its own, so a reader that leaves does
        not cancel it for the others."""
        if up_to is None:
            return await self._read_store(run_id, tenancy, cursor, up_to)
        key = (run_id, cursor, up_to)
        read = self._reads.get(key)
        if read is None:
            read = asyncio.ensure_future(self._read_store(run_id, tenancy, cursor, up_to))
            self._reads[key] = read
            read.add_done_callback(lambda _: self._reads.pop(key, None))
        return await asyncio.shield(read)

    async def _read_store(
        self, run_id: str, tenancy: Tenancy, cursor: int, up_to: int | None
    ) -> _Read:
        async with self.db.read_scope() as session:
            runs = RunRepository(session, tenancy)
            progress = await runs.progress(run_id)
            events = await runs.events_after(run_id, cursor, limit=BATCH, max_bytes=PAGE_BYTES)
        if progress is None:
            return _Read([], finished=True, complete=True, turns=0, more=False)
        event_seq, status, turns = progress
        if up_to is not None:
            events = [event for event in events if event.seq <= up_to]
        last = events[-1].seq if events else cursor
        # The page stopped short of what this read may send: the next page follows at once.
        more = bool(events) and last < (event_seq if up_to is None else min(up_to, event_seq))
        complete = last >= event_seq
        return _Read(events, status in ENDED and complete, complete, turns, more)


@dataclass(frozen=True, slots=True)
class _Read:
    events: list[StoredEvent]
    finished: bool  # the run has ended and these are its last events
    complete: bool  # these reach the last event stored when the run was read
    turns: int  # the turns the run had then: their messages are among the events sent
    more: bool  # events past this page were stored already
