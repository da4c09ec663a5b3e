"""The executor: claims queued runs with bounded concurrency and drives each in its own task.

A loop of claim-or-wait, a heartbeat that renews leases and notices cancels requested elsewhere,
and a stop that hands unfinished runs back to the queue.
"""

from __future__ import annotations

import random
import socket
import uuid
from datetime import timedelta

import anyio
import structlog
from anyio.abc import TaskGroup

from app.engine import Engine
from app.observability import metrics
from app.services.lifecycle import now
from app.store.database import Database, is_transient
from app.store.direct import DirectWrites
from app.store.leases import Leases
from app.store.wakeups import Wakeups
from app.worker.commits import GroupCommit
from app.worker.driver import RunDriver, StopReason

log = structlog.get_logger("app.worker")


STAGGER_SECONDS = 0.005


def worker_name() -> str:
    """This process, as other processes, the store and the logs know it."""
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
        lease_seconds: float = 20.0,
        heartbeat_seconds: float = 5.0,
        shutdown_grace: float = 10.0,
        max_takeovers: int = 3,
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
        self.max_takeovers = max_takeovers
        self.name = name or worker_name()
        self.drivers: dict[str, RunDriver] = {}
        self.commits = GroupCommit(db)  # the checkpoints of its runs, many a transaction
        self.direct = None if db.is_sqlite else DirectWrites(db)  # or one statement each
        # Drivers of runs this executor claimed again (its own lease had expired in a
        # database outage): told to stop, they hold a slot until they have.
        self._retiring: set[RunDriver] = set()
        # The last claim took as many runs as it had slots for: more may wait in the queue.
        self._more_queued = True
        self.fenced_total = 0  # writes refused because another executor had taken the run
        self._claim_failures = 0
        self._slot_freed = anyio.Event()
        self._stop = anyio.Event()
        self.stopped = anyio.Event()
        self._group: TaskGroup | None = None
        self.log = log.bind(worker=self.name)
        wakeups.on_cancel(self.cancel)

    async def run(self) -> None:
        """Claim and drive runs until `stop`; then hand back what is unfinished."""
        self.log.info("executor.started", concurrency=self.concurrency)
        try:
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
        finally:
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

    def _free_slots(self) -> int:
        return self.concurrency - len(self.drivers) - len(self._retiring)

    async def _claim(self) -> None:
        free = self._free_slots()
        if free <= 0 or self._stop.is_set():
            return
        try:
            # One statement, committed on its own: a claim that finds the runs taken by a
            # quicker executor (most of them, when several hear one hint) costs one round trip.
            async with self.db.statement_scope() as session:
                claims = await Leases(session).claim(
                    self.name, limit=free, now=now(), lease_seconds=self.lease_seconds
                )
        except Exception as exc:
            self._claim_failures += 1
            self._database_failed("executor.claim_failed", exc)
            return
        self._claim_failures = 0
        self._more_queued = len(claims) == free
        metrics.TAKEOVERS.inc(sum(1 for claim in claims if claim.taken_over))
        drivers = [
            RunDriver(
                self.db,
                self.engine,
                self.wakeups,
                claim,
                commits=self.commits,
                lease_seconds=self.lease_seconds,
                max_takeovers=self.max_takeovers,
                worker=self.name,
                direct=self.direct,
            )
            for claim in claims
        ]
        await self._start(drivers)
        for driver in drivers:
            stale = self.drivers.get(driver.claim.run_id)
            if stale is not None:
                stale.stop(StopReason.LEASE_LOST)
                self._retiring.add(stale)
            self.drivers[driver.claim.run_id] = driver
            assert self._group is not None
            self._group.start_soon(self._drive, driver)

    async def _start(self, drivers: list[RunDriver]) -> None:
        """Start the claimed runs in one transaction rather than one each. Should it fail,
        each driver starts its run itself, through its retries or to its run's failure."""
        together = [driver for driver in drivers if not driver.starts_directly]
        with anyio.CancelScope(shield=True):  # a stop waits for the starts
            for driver in drivers:
                if driver.starts_directly:
                    try:
                        await driver.start_directly()
                    except Exception as exc:
                        self._database_failed("executor.start_failed", exc)
                        driver.start_undone()
            if not together:
                return
            try:
                async with self.db.session_scope() as session:
                    # In the order of the runs' ids, as every write of several runs locks them.
                    for driver in sorted(together, key=lambda d: d.claim.run_id):
                        await driver.start_in(session)
            except Exception as exc:
                self._database_failed("executor.start_failed", exc)
                for driver in together:
                    driver.start_undone()

    async def _drive(self, driver: RunDriver) -> None:
        # Drivers are shielded from the group's cancel so a stop hands runs back cleanly.
        try:
            with anyio.CancelScope(shield=True):
                await driver.drive()
        finally:
            if driver.lost_lease:
                self._fenced(driver.claim.run_id, "write")
            # The same run may have been claimed again by now (after its lease expired).
            if self.drivers.get(driver.claim.run_id) is driver:
                del self.drivers[driver.claim.run_id]
            self._retiring.discard(driver)
            self._slot_freed.set()
            if driver.in_session:
                self.wakeups.work_available()  # the session's next run may wait for this one

    def _database_failed(self, event: str, exc: Exception) -> None:
        if is_transient(exc):  # an outage: one line, no traceback, it will come back
            self.log.warning(event, error=type(exc).__name__)
        else:
            self.log.exception(event)

    def _fenced(self, run_id: str, refused: str) -> None:
        self.fenced_total += 1
        metrics.FENCED.inc()
        self.log.warning(
            "executor.lease_fenced", run_id=run_id, refused=refused, fenced_total=self.fenced_total
        )

    async def _idle(self) -> None:
        """Wait for work, a freed slot, or the poll interval (work from other processes, and
        leases that expired); after database faults, back off instead."""
        if self._claim_failures:
            backoff = 0.05 * 2 ** min(self._claim_failures, 6)
            await anyio.sleep(min(backoff, 2.0, self.poll_interval * 5))
            return
        with anyio.move_on_after(self.poll_interval):
            if self._free_slots() <= 0:
                await self._slot_freed.wait()
            if self._more_queued:
                # Runs were left in the queue when the slots ran out; a slot is free now (or
                # came free while that claim was in flight, its signal then already spent).
                return
            # Otherwise the queue was empty at the last claim: claiming again on every freed
            # slot would cost a transaction per run for nothing. Work signals say when to.
            if await self.wakeups.wait_for_work():
                await anyio.sleep(self._stagger())

    def _stagger(self) -> float:
        """Every idle executor hears another process's work hint. The least loaded claims
        first; the others come a few milliseconds later, mostly to find the runs taken."""
        load = len(self.drivers) / self.concurrency
        return STAGGER_SECONDS * (load + random.random() / 4)

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_seconds)
            claims = [driver.claim for driver in self.drivers.values()]
            if not claims:
                continue
            expires = now() + timedelta(seconds=self.lease_seconds)
            try:
                with anyio.CancelScope(shield=True):  # a stop waits for the transaction
                    async with self.db.session_scope() as session:
                        renewal = await Leases(session).renew_leases(claims, expires_at=expires)
            except Exception as exc:
                self._database_failed("executor.heartbeat_failed", exc)
                continue
            for claim in claims:
                driver = self.drivers.get(claim.run_id)
                if claim.run_id in renewal.taken and driver is not None and driver.claim is claim:
                    self._fenced(claim.run_id, "lease renewal")
                    driver.stop(StopReason.LEASE_LOST)
            for run_id in renewal.cancel_requested:
                self.cancel(run_id)
