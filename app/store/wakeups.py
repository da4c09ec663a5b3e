"""Wake-ups in one process: new work for its executor, changes and text deltas for the watchers
of a run (event streams and `?wait`).

Writes this process makes signal at once. Writes of other processes (PostgreSQL with workers)
are found by one batched query per tick for every watched run (`poll_changes`), never by a
poll per watcher.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, defaultdict, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, assert_never

import anyio
import structlog

from app.store.channels import DeltaChannel
from app.store.database import Database
from app.store.runs import RunRepository
from app.store.signals import CancelRequested, DeliveriesQueued, RunChanged, Signal, WorkQueued
from app.store.tenancy import EVERY_TENANT

log = structlog.get_logger("app.store")

# Deltas a watcher may hold unread; a slower reader loses the newest, never slows the run.
DELTA_BUFFER = 512

# Runs whose last stored event id is remembered with no watcher: enough to cover the runs that
# change while a reader's read of one is under way, however busy the process.
REMEMBERED_RUNS = 4096


@dataclass(frozen=True, slots=True)
class Stored:
    """Events up to `seq` are stored (None: up to whatever is stored now), and the run's
    status is `status` (None: not known without reading it)."""

    seq: int | None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class Delta:
    """Text the model generated, `{turn, attempt, text}`."""

    data: dict[str, Any]


@dataclass(eq=False)
class RunWatch:
    """One watcher of one run: what happened, in the order it happened.

    Deltas and store notices share one queue, so a reader shows a turn's text before that turn's
    stored message. Consecutive notices merge, and deltas past the buffer are dropped: the queue
    stays small however slowly its reader reads.
    """

    run_id: str
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    items: deque[Stored | Delta] = field(default_factory=deque)
    buffered_deltas: int = 0
    dropped_deltas: int = 0

    def stored(self, seq: int | None, status: str | None = None) -> None:
        last = self.items[-1] if self.items else None
        if isinstance(last, Stored):
            merged = None if last.seq is None or seq is None else max(last.seq, seq)
            # The status is the newest notice's; a poll that read before a local write may
            # report an older one after it. Unknown when either does not say which is newer.
            if last.seq is None or seq is None or last.status is None:
                status = None
            elif seq < last.seq:
                status = last.status
            self.items[-1] = Stored(merged, status)
        else:
            self.items.append(Stored(seq, status))
        self.changed.set()

    def delta(self, delta: Delta) -> None:
        if self.buffered_deltas >= DELTA_BUFFER:
            self.dropped_deltas += 1
            return
        self.items.append(delta)
        self.buffered_deltas += 1
        self.changed.set()

    async def next(self) -> Stored | Delta:
        while not self.items:
            self.changed.clear()
            await self.changed.wait()
        item = self.items.popleft()
        if isinstance(item, Delta):
            self.buffered_deltas -= 1
        return item

    def deltas_queued(self) -> list[Delta]:
        """The deltas queued before the next store notice, taken without waiting: a reader
        that fell behind catches up in one write."""
        taken: list[Delta] = []
        while self.items and isinstance(head := self.items[0], Delta):
            self.items.popleft()
            taken.append(head)
        self.buffered_deltas -= len(taken)
        return taken


ChangeReader = Callable[[list[str]], Awaitable[dict[str, tuple[int, str]]]]
"""Each watched run's last event id and status, as stored now (`RunRepository.event_seqs`)."""


def store_changes(db: Database) -> ChangeReader:
    """What other processes changed of the runs watched here, read from the store."""

    async def read(run_ids: list[str]) -> dict[str, tuple[int, str]]:
        async with db.read_scope() as session:
            return await RunRepository(session, EVERY_TENANT).event_seqs(run_ids)

    return read


class Wakeups:
    """The process's hub: `channel` (PostgreSQL) carries deltas, cancels and work hints to and
    from other processes; `follow_deltas` takes in their deltas (a process that serves event
    streams), `follow_work` their cancels and work hints (a process with an executor).
    `on_watchers` hears the number of watchers each time it changes."""

    def __init__(
        self,
        channel: DeltaChannel | None = None,
        *,
        follow_deltas: bool = True,
        follow_work: bool = True,
        on_watchers: Callable[[int], None] | None = None,
    ) -> None:
        self._work = asyncio.Event()
        self._deliveries = asyncio.Event()
        self.closing = False
        self._local_work = False
        self._hinted = False
        self._watchers: defaultdict[str, set[RunWatch]] = defaultdict(set)
        self._cancel_listeners: list[Callable[[str], None]] = []
        self._seen_seq: OrderedDict[str, int] = OrderedDict()
        self._on_watchers = on_watchers
        self.channel = channel
        if channel is not None:
            channel.deliver_to(
                deltas=self.local_delta if follow_deltas else None,
                cancels=self.cancel_requested if follow_work else None,
                work=self.work_hinted if follow_work else None,
            )

    async def deliver(self, committed: Sequence[Signal]) -> None:
        """What committed writes signal (`Database.on_commit`): to this process's waiters, and
        through the channel to other processes'."""
        for signal in committed:
            match signal:
                case RunChanged(run_id, event_seq, status):
                    self.run_changed(run_id, event_seq, status)
                case WorkQueued():
                    self.work_enqueued()
                case DeliveriesQueued():
                    self.deliveries_queued()
                case CancelRequested(run_id):
                    await self.request_cancel(run_id)
                case _:
                    assert_never(signal)

    def close(self) -> None:
        """The process is stopping: every watcher wakes, and waits give the run as it is."""
        self.closing = True
        for watches in self._watchers.values():
            for watch in watches:
                watch.stored(None)

    def deliveries_queued(self) -> None:
        """Webhook deliveries were stored: this process's sender sends them now."""
        self._deliveries.set()

    async def wait_for_deliveries(self) -> None:
        """Return when deliveries were stored since the last call; callers bound the wait."""
        await self._deliveries.wait()
        self._deliveries.clear()

    def work_available(self) -> None:
        """Something this process's executor may claim now (a slot came free, say)."""
        self._local_work = True
        self._work.set()

    def work_enqueued(self) -> None:
        """Runs were queued: this process's executor and idle ones elsewhere may claim them."""
        self._local_work = True
        self._work.set()
        if self.channel is not None:
            self.channel.work_queued()

    def work_hinted(self) -> None:
        """Another process queued runs (every listening executor hears it)."""
        self._hinted = True
        self._work.set()

    async def wait_for_work(self) -> bool:
        """Return when work was signalled since the last call; callers bound the wait.

        True when only other processes' hints woke it: every idle executor heard those, and
        the caller staggers its claim so they do not all run at the same instant."""
        await self._work.wait()
        self._work.clear()
        hinted_only = self._hinted and not self._local_work
        self._hinted = self._local_work = False
        return hinted_only

    def run_changed(self, run_id: str, seq: int | None = None, status: str | None = None) -> None:
        """The run's row (and events up to `seq`, when known) changed in the store; `status`
        is what it has become, when the caller knows."""
        if seq is not None:
            self._remember_seq(run_id, seq)
        for watch in self._watchers.get(run_id, ()):
            watch.stored(seq, status)

    def _remember_seq(self, run_id: str, seq: int) -> None:
        # Kept with no watcher too: a reader whose read began before this change and returned
        # after it starts watching with the older id, and must hear of it (`watch`).
        if seq > self._seen_seq.get(run_id, -1):
            self._seen_seq[run_id] = seq
        self._seen_seq.move_to_end(run_id)
        if len(self._seen_seq) > REMEMBERED_RUNS:
            self._seen_seq.popitem(last=False)

    def delta(self, run_id: str, data: dict[str, Any]) -> None:
        """Text as the model generates it: to this process's watchers of the run, and to other
        processes' through the delta channel (PostgreSQL)."""
        self.local_delta(run_id, data)
        if self.channel is not None:
            self.channel.publish(run_id, data)

    def local_delta(self, run_id: str, data: dict[str, Any]) -> None:
        # One object for every watcher: what is made of it for one (its frame) serves all.
        delta = Delta(data)
        for watch in self._watchers.get(run_id, ()):
            watch.delta(delta)

    async def flush_deltas(self) -> None:
        """Send pending deltas before a checkpoint, so other processes see them before its
        events."""
        if self.channel is not None:
            await self.channel.flush()

    @property
    def watcher_count(self) -> int:
        return sum(len(watches) for watches in self._watchers.values())

    @contextmanager
    def watch(self, run_id: str, seen_seq: int | None = None) -> Iterator[RunWatch]:
        """Watch a run; `seen_seq`, the event id the caller last read, gets a notice at once
        if a later change was heard of since (while the caller's read was under way, say)."""
        watch = RunWatch(run_id)
        found = self._seen_seq.get(run_id)
        if seen_seq is not None and found is not None and found > seen_seq:
            watch.stored(found)
        self._watchers[run_id].add(watch)
        self._watchers_counted()
        try:
            yield watch
        finally:
            self._watchers[run_id].discard(watch)
            if not self._watchers[run_id]:
                del self._watchers[run_id]
            self._watchers_counted()

    def _watchers_counted(self) -> None:
        if self._on_watchers is not None:
            self._on_watchers(self.watcher_count)

    def on_cancel(self, listener: Callable[[str], None]) -> None:
        self._cancel_listeners.append(listener)

    def cancel_requested(self, run_id: str) -> None:
        """Stop the run if this process's executor drives it."""
        for listener in self._cancel_listeners:
            listener(run_id)

    async def request_cancel(self, run_id: str) -> None:
        """Stop the run in whichever process drives it (its cancel flag is stored)."""
        self.cancel_requested(run_id)
        if self.channel is not None:
            await self.channel.cancel(run_id)

    async def poll_changes(self, read: ChangeReader, interval: float) -> None:
        """Wake the watchers of runs that other processes changed: one query per tick for all
        watched runs, and none while nobody watches."""
        while True:
            await anyio.sleep(interval)
            watched = list(self._watchers)
            if not watched:
                continue
            try:
                changes = await read(watched)
            except Exception:
                log.exception("wakeups.poll_failed")
                continue
            for run_id, (seq, status) in changes.items():
                if run_id not in self._watchers:
                    continue  # its last watcher left during the query
                if self._seen_seq.get(run_id, -1) < seq:
                    self.run_changed(run_id, seq, status)
