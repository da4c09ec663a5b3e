"""The executor: claims queued runs with bounded concurrency and drives each in its own task.

A loop of claim-or-wait, a heartbeat that renews leases and notices cancels requested elsewhere,
and a stop that hands unfinished runs back to the queue.
"""

from __future__ import annotations

import signal
import socket
import uuid
from datetime import timedelta

import anyio
import structlog
from anyio.abc import TaskGroup

from app.engine import Engine
from app.executor.agents import build_engine, load_agents_module
from app.executor.driver import RunDriver, StopReason
from app.executor.lifecycle import now
from app.executor.wakeups import Wakeups
from app.settings import Settings
from app.store.channels import DeltaChannel
from app.store.database import Database
from app.store.migrations import ensure_schema
from app.store.runs import RunRepository

log = structlog.get_logger("app.executor")


def worker_name() -> str:
    return f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"


class Executor:
    def __init__(
        self,
        db: Database,
        engine: Engine,
        wakeups: Wakeups,
        *,
        concurrency: int,
        poll_interval: float = 1.0,
        lease_seconds: float = 30.0,
        heartbeat_seconds: float = 1.0,
        shutdown_grace: float = 10.0,
        name: str | None = None,
    ) -> None:
        self.db = db
        self.engine = engine
        self.wakeups = wakeups
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.shutdown_grace = shutdown_grace
        self.name = name or worker_name()
        self.drivers: dict[str, RunDriver] = {}
        self.claimed_total = 0
        self._slot_freed = anyio.Event()
        self._stop = anyio.Event()
        self.stopped = anyio.Event()
        self._group: TaskGroup | None = None
        self.log = log.bind(worker=self.name)
        wakeups.on_cancel(self.cancel)

    @classmethod
    def from_settings(
        cls, db: Database, engine: Engine, wakeups: Wakeups, settings: Settings
    ) -> Executor:
        return cls(
            db,
            engine,
            wakeups,
            concurrency=settings.concurrency,
            poll_interval=settings.poll_interval_seconds,
            shutdown_grace=settings.shutdown_grace_seconds,
        )

    async def run(self) -> None:
        """Claim and drive runs until `stop`; then hand back what is unfinished."""
        self.log.info("executor.started", concurrency=self.concurrency)
        async with anyio.create_task_group() as group:
            self._group = group
            group.start_soon(self._heartbeat)
            while not self._stop.is_set():
                self._slot_freed = anyio.Event()
                await self._claim()
                await self._idle()
            await self._drain()
            for driver in list(self.drivers.values()):
                driver.stop(StopReason.SHUTDOWN)
            group.cancel_scope.cancel()
        self.stopped.set()
        self.log.info("executor.stopped")

    async def _drain(self) -> None:
        """Let the turns in flight finish (up to the grace period); each run is then handed
        back between turns, so no tool call is cut off and left in doubt."""
        for driver in self.drivers.values():
            driver.drain()
        with anyio.move_on_after(self.shutdown_grace):
            while self.drivers:
                freed = self._slot_freed = anyio.Event()
                if not self.drivers:
                    break
                await freed.wait()

    def stop(self) -> None:
        self._stop.set()
        self.wakeups.work_available()

    def cancel(self, run_id: str) -> None:
        driver = self.drivers.get(run_id)
        if driver is not None:
            driver.stop(StopReason.CANCEL)

    async def _claim(self) -> None:
        free = self.concurrency - len(self.drivers)
        if free <= 0 or self._stop.is_set():
            return
        try:
            async with self.db.session_scope() as session:
                claims = await RunRepository(session).claim(
                    self.name, limit=free, now=now(), lease_seconds=self.lease_seconds
                )
        except Exception:
            self.log.exception("executor.claim_failed")
            return
        for claim in claims:
            driver = RunDriver(self.db, self.engine, self.wakeups, claim)
            self.drivers[claim.run_id] = driver
            assert self._group is not None
            self._group.start_soon(self._drive, driver)
        self.claimed_total += len(claims)

    async def _drive(self, driver: RunDriver) -> None:
        # Drivers are shielded from the group's cancel so a stop hands runs back cleanly.
        try:
            with anyio.CancelScope(shield=True):
                await driver.drive()
        finally:
            # The same run may have been claimed again by now (after its lease expired).
            if self.drivers.get(driver.claim.run_id) is driver:
                del self.drivers[driver.claim.run_id]
            self._slot_freed.set()
            self.wakeups.work_available()  # a session's next run may be waiting for this one

    async def _idle(self) -> None:
        """Wait for work, a freed slot, or the poll interval (work from other processes)."""
        with anyio.move_on_after(self.poll_interval):
            if len(self.drivers) >= self.concurrency:
                await self._slot_freed.wait()
            else:
                await self.wakeups.wait_for_work()

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_seconds)
            if not self.drivers:
                continue
            expires = now() + timedelta(seconds=self.lease_seconds)
            try:
                async with self.db.session_scope() as session:
                    cancelled = await RunRepository(session).renew_leases(
                        self.name, list(self.drivers), expires_at=expires
                    )
            except Exception:
                self.log.exception("executor.heartbeat_failed")
                continue
            for run_id in cancelled:
                self.cancel(run_id)


async def run_worker(settings: Settings, stop_signals: tuple[signal.Signals, ...]) -> None:
    """The `worker` process: an executor on the configured database until a stop signal."""
    db = Database(settings.database_url)
    try:
        await ensure_schema(db)
        engine = build_engine(settings, load_agents_module(settings.agents_module))
        wakeups = Wakeups()
        # Deltas go out to the API processes whose clients watch; cancels come in.
        channel = DeltaChannel(db, worker_name(), deliver=None, on_cancel=wakeups.cancel_requested)
        wakeups.channel = channel
        executor = Executor.from_settings(db, engine, wakeups, settings)
        async with anyio.create_task_group() as group:
            group.start_soon(channel.run)
            group.start_soon(executor.run)
            with anyio.open_signal_receiver(*stop_signals) as received:
                async for signum in received:
                    log.info("executor.signal", signal=signum)
                    executor.stop()
                    break
            await executor.stopped.wait()
            group.cancel_scope.cancel()  # the channel, once the executor has handed back
        await engine.aclose()
    finally:
        await db.dispose()
