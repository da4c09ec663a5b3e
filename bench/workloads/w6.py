"""W6: a large store on PostgreSQL (1 API + 2 workers): runs parked at `pending_approval` and
finished runs, seeded by bulk SQL; then W1 against an empty store's, the processes' memory,
and the p99 of `GET /runs` and `GET /approvals`.

Seeding copies two runs the service itself made (one parked on `delete_record`, one completed)
with all their rows (events, approvals), under new ids (the old id replaced inside JSON too),
so the service reads the copies as its own: one copy is decided and must run to its end."""

from __future__ import annotations

import time
from typing import Any

import anyio
import asyncpg
import httpx

from bench import client
from bench.context import Context
from bench.cpu import rss_mib
from bench.fake import prompt
from bench.load import Failed, percentile
from bench.procs import BenchError, Resources, Service
from bench.report import Figure, Outcome, at_least, at_most
from bench.workloads.common import ONE_TURN, log, saturate_one_turn, until

PARKED = prompt(turns=2, tool="delete_record")
BATCH = 50_000
# The tables holding a run's rows, the column naming the run, and the serial key left out.
TABLES = (
    ("runs", "id", "seq"),
    ("run_messages", "run_id", None),
    ("run_steps", "run_id", None),
    ("run_events", "run_id", "id"),
    ("approvals", "run_id", "seq"),
)


async def _columns(db: asyncpg.Connection, table: str) -> list[tuple[str, str]]:
    rows = await db.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = $1 ORDER BY ordinal_position",
        table,
    )
    return [(row["column_name"], row["data_type"]) for row in rows]


async def _copy(db: asyncpg.Connection, template: str, prefix: str, count: int) -> None:
    """`count` copies of run `template` and its rows, ids `run_<prefix><number>`."""
    plans = []
    for table, key, serial in TABLES:
        columns = [(name, kind) for name, kind in await _columns(db, table) if name != serial]
        new_id = f"'run_{prefix}' || lpad(g::text, 16, '0')"
        values = [
            new_id
            if name == key
            else f"replace(t.{name}::text, $1, {new_id})::{kind}"
            if kind in ("json", "jsonb")
            else f"t.{name}"
            for name, kind in columns
        ]
        names = ", ".join(f'"{name}"' for name, _ in columns)
        plans.append(
            f"INSERT INTO {table} ({names}) SELECT {', '.join(values)}"
            f" FROM {table} t CROSS JOIN generate_series($2::int, $3::int) g WHERE t.{key} = $1"
        )
    for start in range(1, count + 1, BATCH):
        stop = min(count, start + BATCH - 1)
        async with db.transaction():
            for plan in plans:
                await db.execute(plan, template, start, stop)
        log(f"w6: {stop:,} of {count:,} copies of {template}")


async def _p99(http: httpx.AsyncClient, path: str, requests: int) -> float | None:
    latencies = []
    for _ in range(requests):
        began = time.perf_counter()
        response = await http.get(path)
        latencies.append((time.perf_counter() - began) * 1000)
        if response.status_code != 200 or not response.json()["items"]:
            raise BenchError(f"GET {path} answered {response.status_code}: {response.text[:200]}")
    return percentile(latencies, 99)


async def _check_seeded(http: httpx.AsyncClient) -> None:
    """A copied parked run is decided and must run to its end; a copied finished one reads back."""
    done = await http.get("/runs/run_f0000000000000001")
    if done.status_code != 200 or done.json()["status"] != "completed":
        raise BenchError(f"a seeded finished run reads as {done.status_code}: {done.text[:200]}")
    parked = (await http.get("/runs/run_p0000000000000001")).json()
    call_id = parked["pending_approvals"][0]["call_id"]
    decision = {"decisions": [{"call_id": call_id, "approved": True}]}
    answer = await http.post("/runs/run_p0000000000000001/approvals", json=decision)
    if answer.status_code != 200:
        raise BenchError(f"deciding a seeded run answered {answer.status_code}: {answer.text}")

    async def completed() -> bool:
        run = (await http.get("/runs/run_p0000000000000001")).json()
        return bool(run["status"] == "completed")

    await until(completed, 30)


def _rss(service: Service) -> float:
    return sum(rss_mib(pid) or 0.0 for pid in service.pids().values())


async def _measure(ctx: Context, service: Service, parked: int, finished: int) -> dict[str, Any]:
    requests = ctx.count(500, 100)

    async with client.http(service.url) as http:
        for _ in range(20):
            await client.completed(http, ONE_TURN, 1)
        empty = await saturate_one_turn(ctx, service, http, start_rate=20, label="w6 empty")
        lists_empty = {
            path: await _p99(http, path, requests) for path in ("/runs", "/runs?status=completed")
        }
        rss_empty = _rss(service)
        run = await client.create(http, PARKED, wait=client.WAIT_SECONDS)
        if run["status"] != "pending_approval":
            raise Failed(f"the parked template ended {run['status']}")
        done = await client.completed(http, ONE_TURN, 1)
        db = await asyncpg.connect(service.dsn)
        try:
            began = time.perf_counter()
            await _copy(db, run["id"], "p", parked)
            await _copy(db, done["id"], "f", finished)
            await db.execute("ANALYZE")  # as a production database's autovacuum would have
            seeded_s = time.perf_counter() - began
            stored = await db.fetchval("SELECT count(*) FROM runs")
        finally:
            await db.close()
        await _check_seeded(http)
        full = await saturate_one_turn(
            ctx, service, http, start_rate=empty.best.throughput / 2, label="w6 seeded"
        )
        paths = ("/runs", "/approvals", "/runs?status=pending_approval", "/approvals?status=all")
        lists = {path: await _p99(http, path, requests) for path in paths}
        rss_full = _rss(service)
    return {
        "parked": parked,
        "finished": finished,
        "runs_stored": stored,
        "seeding_s": seeded_s,
        "empty": empty.details(),
        "seeded": full.details(),
        "ratio": full.best.throughput / empty.best.throughput,
        "list_p99_ms_empty": lists_empty,
        "list_p99_ms": lists,
        "rss_mib": {"empty": rss_empty, "seeded": rss_full},
    }


def run(ctx: Context) -> Outcome:
    parked, finished = ctx.count(100_000, 5_000), ctx.count(1_000_000, 50_000)
    with Resources() as stack:
        service = ctx.service(stack, "w6")
        measured = anyio.run(_measure, ctx, service, parked, finished)
    ratio, lists, rss = measured["ratio"], measured["list_p99_ms"], measured["rss_mib"]
    growth = rss["seeded"] / rss["empty"] - 1 if rss["empty"] else None
    log(f"w6: seeded in {measured['seeding_s']:.0f} s; W1 ratio {ratio:.2f}; lists {lists}")
    size = f"{parked:,} parked + {finished:,} finished"
    return Outcome(
        figures=[
            Figure(
                "W6",
                f"W1 runs/s seeded / empty ({size})",
                ratio * 100,
                "%",
                ">= 90%",
                at_least(ratio, 0.9),
            ),
            Figure(
                "W6", "GET /runs p99", lists["/runs"], "ms", "<= 20 ms", at_most(lists["/runs"], 20)
            ),
            Figure(
                "W6",
                "GET /approvals p99",
                lists["/approvals"],
                "ms",
                "<= 20 ms",
                at_most(lists["/approvals"], 20),
            ),
            Figure(
                "W6",
                "GET /runs?status=pending_approval p99",
                lists["/runs?status=pending_approval"],
                "ms",
                "<= 20 ms",
                at_most(lists["/runs?status=pending_approval"], 20),
            ),
            Figure(
                "W6",
                "service RSS growth, empty -> seeded",
                None if growth is None else growth * 100,
                "%",
                "flat (<= 10%)",
                at_most(growth, 0.1),
            ),
        ],
        details=measured,
    )
