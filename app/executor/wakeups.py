"""In-process wake-ups: new work for the executor, changes of a run for its waiters.

Between processes nothing is signalled yet: executors poll and waiters re-read on a short tick.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Wakeups:
    def __init__(self) -> None:
        self._work = asyncio.Event()
        self._watchers: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._cancel_listeners: list[Callable[[str], None]] = []

    def work_available(self) -> None:
        self._work.set()

    async def wait_for_work(self) -> None:
        """Return when work was signalled since the last call; callers bound the wait."""
        await self._work.wait()
        self._work.clear()

    def run_changed(self, run_id: str) -> None:
        for event in self._watchers.get(run_id, ()):
            event.set()

    @contextmanager
    def watch(self, run_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever this process changes the run."""
        event = asyncio.Event()
        self._watchers[run_id].add(event)
        try:
            yield event
        finally:
            self._watchers[run_id].discard(event)
            if not self._watchers[run_id]:
                del self._watchers[run_id]

    def on_cancel(self, listener: Callable[[str], None]) -> None:
        self._cancel_listeners.append(listener)

    def cancel_requested(self, run_id: str) -> None:
        for listener in self._cancel_listeners:
            listener(run_id)
