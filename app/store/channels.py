"""Hints between processes over PostgreSQL LISTEN/NOTIFY: new work, text deltas and cancels.

A run queued (created, resumed by a decision, handed back by a stopping process) is stored
first; the work hint only lets idle executors claim it at once instead of at their next poll.
Hints sent while one is on its way fold into it, so a burst of runs costs a few notifications.

A worker's model streams text that an API process's clients watch. Deltas are never stored, so
they travel as notifications: the first of a quiet spell at once (of the process, or of the run:
a run's text starting reaches its watchers with no batching delay however busy the process is),
the rest batched per process every few milliseconds (NOTIFY takes a global lock at commit, so
never one per delta), on a connection of their own, and best-effort (a delta lost to a dropped
connection is only a delta: the whole message is stored).

A cancel is stored first (the run's flag, which a worker's heartbeat also finds); its
notification only makes the driving worker stop at once instead of at its next heartbeat.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable
from typing import Any

import anyio
import asyncpg
import structlog

from app.store.database import Database

log = structlog.get_logger("app.store")

CHANNEL = "agent_runs_deltas"
CANCEL_CHANNEL = "agent_runs_cancels"
WORK_CHANNEL = "agent_runs_work"
PAYLOAD_LIMIT = 7000  # PostgreSQL refuses payloads of 8000 bytes and more
PENDING_LIMIT = 10_000  # deltas held while the database is away; later ones are dropped
RUN_QUIET_SECONDS = 1.0  # a run's delta after this long without one is sent at once

Deliver = Callable[[str, dict[str, Any]], None]
OnCancel = Callable[[str], None]
OnWork = Callable[[], None]


class DeltaChannel:
    """Publishes this process's deltas, cancels and work; delivers other processes' deltas to
    `deliver` (API processes), and their cancels and work to `on_cancel` and `on_work`
    (processes with an executor)."""

    def __init__(
        self,
        db: Database,
        origin: str,
        deliver: Deliver | None = None,
        on_cancel: OnCancel | None = None,
        on_work: OnWork | None = None,
        *,
        flush_seconds: float = 0.02,
    ) -> None:
        # The engine's own connection arguments, less the options only SQLAlchemy understands.
        _, arguments = db.engine.dialect.create_connect_args(db.url)
        accepted = inspect.signature(asyncpg.connect).parameters
        self._connect_arguments = {k: v for k, v in arguments.items() if k in accepted}
        self._origin = origin
        self._deliver = deliver
        self._on_cancel = on_cancel
        self._on_work = on_work
        self._work_pending = False
        # Wakes the sending loop before its tick: work queued, or the first delta of a quiet
        # spell (sent at once, so a watcher sees text start with no batching delay).
        self._wake = asyncio.Event()
        self._last_flush = 0.0
        self.connected = asyncio.Event()  # listening and able to send
        self._flush_seconds = flush_seconds
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._last_delta: dict[str, float] = {}  # per run, of those with one in the last second
        self._connection: asyncpg.Connection | None = None
        self._send_lock = anyio.Lock()

    def deliver_to(
        self,
        *,
        deltas: Deliver | None,
        cancels: OnCancel | None,
        work: OnWork | None,
    ) -> None:
        """Where what other processes send goes (set before `run` listens)."""
        self._deliver, self._on_cancel, self._on_work = deltas, cancels, work

    def publish(self, run_id: str, data: dict[str, Any]) -> None:
        if len(self._pending) >= PENDING_LIMIT:
            return
        self._pending.append((run_id, data))
        now = time.monotonic()
        run_quiet = now - self._last_delta.get(run_id, -RUN_QUIET_SECONDS) >= RUN_QUIET_SECONDS
        self._last_delta[run_id] = now
        if run_quiet or now - self._last_flush >= self._flush_seconds:
            self._wake.set()

    async def flush(self) -> None:
        """Send what is pending now (before a checkpoint, so deltas precede its events)."""
        if not self._pending:
            return
        self._last_flush = now = time.monotonic()
        batch, self._pending = self._pending, []
        self._last_delta = {
            run_id: at for run_id, at in self._last_delta.items() if now - at < RUN_QUIET_SECONDS
        }
        if not await self._notify(CHANNEL, _payloads(self._origin, batch)):
            log.warning("deltas.not_sent", count=len(batch))

    def work_queued(self) -> None:
        """Runs were queued: idle executors elsewhere should claim now (sent at once)."""
        self._work_pending = True
        self._wake.set()

    async def _send_work(self) -> None:
        if self._work_pending:
            self._work_pending = False
            if not await self._notify(WORK_CHANNEL, [self._origin]):
                self._work_pending = True  # sent once the connection is back

    async def cancel(self, run_id: str) -> None:
        """Tell the process that drives the run to stop it now (its flag is stored already;
        if this hint is lost, the worker's heartbeat finds the flag)."""
        if not await self._notify(CANCEL_CHANNEL, [run_id]):
            log.warning("cancel.not_sent", run_id=run_id)

    async def _notify(self, channel: str, payloads: list[str]) -> bool:
        """Best effort: whatever goes wrong on this connection must not fail a run."""
        async with self._send_lock:
            connection = self._connection
            if connection is None or connection.is_closed():
                return False
            try:
                for payload in payloads:
                    await connection.execute("SELECT pg_notify($1, $2)", channel, payload)
            except Exception:
                return False
        return True

    async def run(self) -> None:
        """Keep a connection (listening for what this process takes in) and flush."""
        while True:
            try:
                connection = await asyncpg.connect(**self._connect_arguments)
                try:
                    if self._deliver is not None:
                        await connection.add_listener(CHANNEL, self._received)
                    if self._on_cancel is not None:
                        await connection.add_listener(CANCEL_CHANNEL, self._cancelled)
                    if self._on_work is not None:
                        await connection.add_listener(WORK_CHANNEL, self._work_hinted)
                    self._connection = connection
                    self.connected.set()
                    log.info("channel.connected", origin=self._origin)
                    while not connection.is_closed():
                        with anyio.move_on_after(self._flush_seconds):
                            await self._wake.wait()
                        self._wake.clear()
                        await self._send_work()
                        await self.flush()
                finally:
                    with anyio.CancelScope(shield=True):
                        # Runs a stopping process handed back: others take them over at once.
                        with anyio.move_on_after(1):
                            await self._send_work()
                        async with self._send_lock:
                            self._connection = None
                            self.connected.clear()
                            if not connection.is_closed():
                                await connection.close(timeout=5)
            except Exception:
                log.warning("channel.connection_lost", exc_info=True)
            await anyio.sleep(1)  # then connect again

    def _received(self, _connection: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            message = json.loads(str(payload))
            if message["origin"] == self._origin or self._deliver is None:
                return  # this process delivered its own deltas already
            for run_id, data in message["deltas"]:
                self._deliver(run_id, data)
        except Exception:
            log.exception("deltas.bad_notification")

    def _work_hinted(self, _connection: Any, _pid: int, _channel: str, payload: object) -> None:
        if self._on_work is not None and str(payload) != self._origin:
            self._on_work()  # this process's own executor was woken when it queued the run

    def _cancelled(self, _connection: Any, _pid: int, _channel: str, payload: object) -> None:
        if self._on_cancel is not None:
            self._on_cancel(str(payload))


def _payloads(origin: str, batch: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Notification payloads under the size limit, consecutive deltas of one turn merged."""
    # JSON escapes non-ASCII text: one character can take 12 bytes of payload.
    piece = PAYLOAD_LIMIT // 16
    pieces = [
        (run_id, {**data, "text": data["text"][start : start + piece]})
        for run_id, data in batch
        for start in range(0, max(len(data["text"]), 1), piece)
    ]
    merged: list[tuple[str, dict[str, Any]]] = []
    for run_id, data in pieces:
        if merged:
            last_run, last = merged[-1]
            same_turn = (last["turn"], last["attempt"]) == (data["turn"], data["attempt"])
            if last_run == run_id and same_turn and len(last["text"]) + len(data["text"]) <= piece:
                merged[-1] = (run_id, {**last, "text": last["text"] + data["text"]})
                continue
        merged.append((run_id, data))
    payloads: list[str] = []
    chunk: list[tuple[str, dict[str, Any]]] = []
    for item in merged:
        candidate = json.dumps({"origin": origin, "deltas": [*chunk, item]})
        if chunk and len(candidate.encode()) > PAYLOAD_LIMIT:
            payloads.append(json.dumps({"origin": origin, "deltas": chunk}))
            chunk = [item]
        else:
            chunk.append(item)
    if chunk:
        payloads.append(json.dumps({"origin": origin, "deltas": chunk}))
    return payloads
