"""W10 (purge): on PostgreSQL (1 API + 2 workers), a store of ended runs seeded as W6 seeds them,
all ended two days ago; W1's one-turn runs/s without retention, then with `RUN_RETENTION`
deleting that backlog meanwhile, the rate the backlog went at, and the size of the run tables
before, after the purge, after VACUUM (the space kept for new rows) and after VACUUM FULL (the
space given back)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import asyncpg

from bench import client
from bench.context import Context
from bench.procs import Resources, Service, stop_process
from bench.report import Figure, Outcome, at_least
from bench.workloads.common import ONE_TURN, log, saturate_one_turn, until
from bench.workloads.w6 import _copy

# Every table holding a run's rows: the purge empties them all.
TABLES = (
    "runs",
    "run_messages",
    "run_steps",
    "run_events",
    "approvals",
    "webhook_deliveries",
    "idempotency_keys",
)
RETENTION = {"RUN_RETENTION": '{"completed": "1d"}', "RETENTION_INTERVAL_SECONDS": "1"}
# The seeded runs; the runs W1 makes meanwhile ended just now, so they are kept.
DUE = (
    "SELECT count(*) FROM runs"
    " WHERE status = 'completed' AND finished_at < now() - interval '1 day'"
)
MIB = 1024 * 1024


async def _sizes(db: asyncpg.Connection) -> dict[str, float]:
    """MiB on disk (indexes and TOAST included): the runs table, and every run table."""
    sizes = {
        table: await db.fetchval("SELECT pg_total_relation_size($1)", table) for table in TABLES
    }
    return {"runs": sizes["runs"] / MIB, "all": sum(sizes.values()) / MIB}


async def _seed(db: asyncpg.Connection, template: str, count: int) -> None:
    # Ended two days ago: due under a day's retention, the copies with it.
    await db.execute(
        "UPDATE runs SET finished_at = finished_at - interval '2 days' WHERE id = $1", template
    )
    await _copy(db, template, "f", count)
    await db.execute("VACUUM ANALYZE")  # as a production database's autovacuum would have


def _restart_workers(service: Service, settings: dict[str, str]) -> None:
    """The same service's workers, started again with `settings`."""
    old = [worker for worker in service.workers if worker.poll() is None]
    for index, worker in enumerate(old):
        stop_process(worker, f"worker{index}")
    service.env.update(settings)
    for _ in old:
        service.start_worker()


async def _measure(ctx: Context, service: Service, seeded: int) -> dict[str, Any]:
    db = await asyncpg.connect(service.dsn)
    try:
        async with client.http(service.url) as http:
            for _ in range(20):
                await client.completed(http, ONE_TURN, 1)
            done = await client.completed(http, ONE_TURN, 1)
            began = time.perf_counter()
            await _seed(db, done["id"], seeded)
            log(f"w10: seeded {seeded:,} ended runs in {time.perf_counter() - began:.0f} s")
            sizes = {"before": await _sizes(db)}
            off = await saturate_one_turn(
                ctx, service, http, start_rate=20, label="w10 retention off"
            )

            _restart_workers(service, RETENTION)
            purge_began = time.perf_counter()
            for _ in range(20):  # the new workers are up, their pools warm, the purge begun
                await client.completed(http, ONE_TURN, 1)
            due_at_start = await db.fetchval(DUE)
            on = await saturate_one_turn(
                ctx, service, http, start_rate=off.best.throughput / 2, label="w10 purging"
            )
            due_at_end = await db.fetchval(DUE)
            log(f"w10: runs due when the measurement began {due_at_start:,}, ended {due_at_end:,}")

            async def purged() -> bool:
                return bool(await db.fetchval(DUE) == 0)

            await until(purged, max(600.0, seeded / 100), interval=1.0)
            purge_s = time.perf_counter() - purge_began
        sizes["purged"] = await _sizes(db)
        await db.execute("VACUUM")
        sizes["vacuumed"] = await _sizes(db)
        await db.execute("VACUUM FULL")
        sizes["vacuumed_full"] = await _sizes(db)
    finally:
        await db.close()
    return {
        "seeded": seeded,
        "off": off.details(),
        "purging": on.details(),
        "ratio": on.best.throughput / off.best.throughput,
        "due_during_measurement": {"start": due_at_start, "end": due_at_end},
        "purge_s": purge_s,
        "purged_per_s": seeded / purge_s,
        "mib": sizes,
    }


def run(ctx: Context) -> Outcome:
    seeded = ctx.count(1_000_000, 50_000)
    with Resources() as stack:
        service = ctx.service(stack, "w10")
        measured = anyio.run(_measure, ctx, service, seeded)
    ratio, mib = measured["ratio"], measured["mib"]
    log(f"w10: W1 ratio {ratio:.2f}; purged {measured['purged_per_s']:.0f} runs/s; MiB {mib}")
    figures = [
        Figure(
            "W10",
            f"W1 runs/s purging / not ({seeded:,} ended runs due)",
            ratio * 100,
            "%",
            ">= 90%",
            at_least(ratio, 0.9),
        ),
        Figure("W10", "backlog deleted", measured["purged_per_s"], "runs/s"),
    ]
    for stage in ("before", "purged", "vacuumed", "vacuumed_full"):
        figures.append(Figure("W10", f"run tables on disk, {stage}", mib[stage]["all"], "MiB"))
    return Outcome(figures=figures, details=measured)
