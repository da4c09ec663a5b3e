"""Retention: every process with an executor sweeps the store for rows past their age
(contract, "Data lifecycle"), so they go within about an interval of falling due.

A sweep deletes in batches, each its own short transaction that first takes the `retention`
lock without waiting: across many processes one batch runs at a time, and a process that finds
the lock taken leaves the sweep to its holder until its next interval. No lock outlives its
batch, so a killed sweeper holds nobody up. After a full batch the sweeper pauses as long as the
batch took: a backlog of millions drains at half of one connection's time, with the runs'
transactions in between, and what is left waits for the next sweep.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Literal

import anyio
import structlog

from app.observability import metrics
from app.services.lifecycle import now
from app.store.database import Database, is_transient, try_lock_for_transaction
from app.store.retention import Retention

log = structlog.get_logger("app.worker")

LOCK = "retention"

Kind = Literal["runs", "sessions", "idempotency_keys"]
Forget = Callable[[Retention], Awaitable[int]]


@dataclass(frozen=True)
class RetentionPolicy:
    """How long rows are kept once nothing changes them; absent or None: for ever."""

    runs: Mapping[str, timedelta] = field(default_factory=dict)  # ended status -> age
    sessions: timedelta | None = None  # since the session's last run ended
    idempotency_keys: timedelta | None = None  # since the key was first used

    @property
    def forgets_anything(self) -> bool:
        return bool(self.runs) or self.sessions is not None or self.idempotency_keys is not None


class Purger:
    def __init__(
        self, db: Database, policy: RetentionPolicy, *, interval: float, batch: int
    ) -> None:
        self.db = db
        self.policy = policy
        self.interval = interval
        self.batch = batch

    async def run(self) -> None:
        """Sweep every interval until cancelled."""
        if not self.policy.forgets_anything:
            return
        while True:
            await self.sweep()
            await anyio.sleep(self.interval)

    async def sweep(self) -> dict[Kind, int]:
        """Delete what is due, kind by kind, until none is left or another process holds the
        lock; how many rows of each kind went."""
        began = time.perf_counter()
        deleted: dict[Kind, int] = {"runs": 0, "sessions": 0, "idempotency_keys": 0}
        try:
            for kind, forget in self._due(now()):
                while True:
                    batch_began = time.perf_counter()
                    count = await self._batch(forget)
                    if count is None:
                        return deleted
                    deleted[kind] += count
                    metrics.RETENTION_DELETED.labels(kind).inc(count)
                    if count < self.batch:
                        break
                    await anyio.sleep(time.perf_counter() - batch_began)
        except Exception as exc:
            if is_transient(exc):  # an outage: one line; the next sweep goes on
                log.warning("retention.sweep_failed", error=type(exc).__name__)
            else:
                log.exception("retention.sweep_failed")
        finally:
            if any(deleted.values()):
                seconds = round(time.perf_counter() - began, 3)
                log.info("retention.swept", **deleted, seconds=seconds)
        return deleted

    def _due(self, stamp: datetime) -> list[tuple[Kind, Forget]]:
        """Each kind's deletion of a batch, with its cut-off as of `stamp`."""
        policy, limit = self.policy, self.batch
        due: list[tuple[Kind, Forget]] = []
        for status, age in policy.runs.items():
            runs = partial(Retention.forget_runs, status=status, before=stamp - age, limit=limit)
            due.append(("runs", runs))
        if policy.sessions is not None:
            before = stamp - policy.sessions
            due.append(("sessions", partial(Retention.forget_sessions, before=before, limit=limit)))
        if policy.idempotency_keys is not None:
            before = stamp - policy.idempotency_keys
            keys = partial(Retention.forget_idempotency_keys, before=before, limit=limit)
            due.append(("idempotency_keys", keys))
        return due

    async def _batch(self, forget: Forget) -> int | None:
        """One batch in its own transaction; None when another process holds the lock."""
        # A stop waits for the short transaction instead of cutting it.
        with anyio.CancelScope(shield=True):
            async with self.db.session_scope() as session:
                if not await try_lock_for_transaction(session, LOCK):
                    return None
                count = await forget(Retention(session))
        return count
