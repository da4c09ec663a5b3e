"""A run's event stream: the stored events after a given id, then the live ones as they come,
with no gap and no duplicate between the two, and the model's text deltas in between."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.executor.errors import RunNotFound
from app.executor.wakeups import Delta, Wakeups
from app.store.database import Database
from app.store.models import RunEvent
from app.store.runs import RunRepository
from app.store.status import ENDED

BATCH = 200


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One server-sent event; deltas have no id (they are never stored nor replayed)."""

    id: int | None
    event: str
    data: dict[str, Any]


class RunEventStream:
    def __init__(self, db: Database, wakeups: Wakeups) -> None:
        self.db = db
        self.wakeups = wakeups

    async def check(self, run_id: str) -> None:
        """Raise `RunNotFound` before a stream is opened for nothing."""
        async with self.db.session_scope() as session:
            if await RunRepository(session).get(run_id) is None:
                raise RunNotFound(f"no run has id {run_id!r}")

    async def events(self, run_id: str, after: int) -> AsyncIterator[StreamItem]:
        """Everything after event `after`; ends once the run has ended and all is sent."""
        cursor = after
        up_to: int | None = None
        # Watch before the first read: a change landing during the replay is not missed.
        with self.wakeups.watch(run_id) as watch:
            while True:
                batch, finished = await self._read(run_id, cursor, up_to)
                for event in batch:
                    cursor = event.seq
                    yield StreamItem(event.seq, event.name, event.data)
                if finished:
                    return
                if len(batch) == BATCH:
                    continue  # more is stored already
                change = await watch.next()
                while isinstance(change, Delta):
                    yield StreamItem(None, "message.delta", change.data)
                    change = await watch.next()
                up_to = change.seq

    async def _read(
        self, run_id: str, cursor: int, up_to: int | None
    ) -> tuple[list[RunEvent], bool]:
        """Stored events after `cursor` (none past `up_to`: a turn's deltas come before its
        later events), and whether they are the run's last."""
        async with self.db.session_scope() as session:
            runs = RunRepository(session)
            run = await runs.get(run_id)
            events = await runs.events_after(run_id, cursor, limit=BATCH)
        if run is None:
            return [], True
        if up_to is not None:
            events = [event for event in events if event.seq <= up_to]
        last = events[-1].seq if events else cursor
        return events, run.status in ENDED and last >= run.event_seq
