"""W9 (fair share): on PostgreSQL (1 API + 2 workers), a quiet tenant's few one-turn runs are
queued alone, then again right behind a noisy tenant's burst of five-turn runs. Its queue wait
(created -> started) with the burst in the queue is set beside its wait alone, and beside the
time the burst takes to drain: what a first-come queue would have made it wait."""

from __future__ import annotations

import time
from typing import Any

import anyio
import asyncpg
import httpx

from bench import client
from bench.context import Context
from bench.fake import prompt
from bench.load import Failed, percentile
from bench.procs import Resources, Service
from bench.report import Figure, Outcome
from bench.workloads.common import ONE_TURN, log, until

NOISY_KEY = "bench-noisy-key-0123456789"
QUIET_KEY = "bench-quiet-key-0123456789"
SETTINGS = {"API_KEYS": f"noisy/batch:{NOISY_KEY}, quiet/ui:{QUIET_KEY}"}
POSTERS = 64
ATTEMPTS = 5
# The noisy tenant's runs take five turns: the burst is posted several times faster than the
# executors drain it, so a backlog builds (one-turn runs drain about as fast as they come).
BATCH_JOB = prompt(turns=5)
RESTING = ("completed", "failed", "cancelled", "pending_approval")


async def _post(
    http: httpx.AsyncClient, key: str, count: int, phase: str, text: str = ONE_TURN
) -> list[str]:
    """`count` runs of the key's tenant, posted by up to POSTERS at once, each asked
    again with its Idempotency-Key when its connection drops (as W3's careful client)."""
    ids: list[str] = []
    numbers = iter(range(count))
    body = {"agent": client.AGENT, "input": text}

    async def one(number: int) -> str:
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": f"w9-{phase}-{number}"}
        for _ in range(ATTEMPTS):
            try:
                response = await http.post("/runs", json=body, headers=headers)
            except httpx.TransportError:
                continue
            if response.status_code in (200, 201):
                run_id: str = response.json()["id"]
                return run_id
            if response.status_code != 409:
                raise Failed(f"POST /runs answered {response.status_code}: {response.text[:200]}")
            await anyio.sleep(0.1)
        raise Failed(f"POST /runs failed {ATTEMPTS} times")

    async def poster() -> None:
        for number in numbers:
            ids.append(await one(number))

    async with anyio.create_task_group() as group:
        for _ in range(min(POSTERS, count)):
            group.start_soon(poster)
    return ids


async def _rested(db: asyncpg.Connection, ids: list[str], seconds: float) -> None:
    async def done() -> bool:
        unfinished: int = await db.fetchval(
            "SELECT count(*) FROM runs WHERE id = ANY($1::text[]) AND status <> ALL($2::text[])",
            ids,
            list(RESTING),
        )
        return unfinished == 0

    await until(done, seconds, interval=0.1)


async def _waits_ms(db: asyncpg.Connection, ids: list[str]) -> list[float]:
    rows = await db.fetch(
        "SELECT EXTRACT(EPOCH FROM started_at - created_at) * 1000 AS wait FROM runs"
        " WHERE id = ANY($1::text[])",
        ids,
    )
    return [float(row["wait"]) for row in rows]


async def _drain_s(db: asyncpg.Connection, ids: list[str]) -> float:
    seconds = await db.fetchval(
        "SELECT EXTRACT(EPOCH FROM max(finished_at) - min(created_at)) FROM runs"
        " WHERE id = ANY($1::text[])",
        ids,
    )
    return float(seconds)


async def _measure(ctx: Context, service: Service, noisy: int, quiet: int) -> dict[str, Any]:
    db = await asyncpg.connect(service.dsn)
    try:
        async with client.http(service.url, connections=POSTERS) as http:
            alone = await _post(http, QUIET_KEY, quiet, "alone")
            await _rested(db, alone, ctx.pick(120, 60))
            began = time.perf_counter()
            burst = await _post(http, NOISY_KEY, noisy, "burst", BATCH_JOB)
            posted_s = time.perf_counter() - began
            behind = await _post(http, QUIET_KEY, quiet, "behind")
            await _rested(db, burst + behind, ctx.pick(600, 300))
        alone_ms, behind_ms = await _waits_ms(db, alone), await _waits_ms(db, behind)
        drain = await _drain_s(db, burst)
    finally:
        await db.close()
    return {
        "noisy_runs": noisy,
        "quiet_runs": quiet,
        "burst_posted_s": posted_s,
        "burst_drain_s": drain,
        "quiet_alone_wait_ms": sorted(alone_ms),
        "quiet_behind_burst_wait_ms": sorted(behind_ms),
    }


def run(ctx: Context) -> Outcome:
    noisy, quiet = ctx.count(1000, 300), 10
    with Resources() as stack:
        service = ctx.service(stack, "w9", settings=SETTINGS)
        measured = anyio.run(_measure, ctx, service, noisy, quiet)
    alone = percentile(measured["quiet_alone_wait_ms"], 99) or 0.0
    behind = percentile(measured["quiet_behind_burst_wait_ms"], 99) or 0.0
    drain_ms = measured["burst_drain_s"] * 1000
    log(f"w9: quiet p99 wait alone {alone:.0f} ms, behind {noisy} runs {behind:.0f} ms")
    return Outcome(
        figures=[
            Figure("W9", f"quiet tenant's queue wait p99, {quiet} runs alone", alone, "ms"),
            Figure(
                "W9",
                f"the same, posted right after another tenant's {noisy} runs",
                behind,
                "ms",
                "far below the burst's drain",
                behind < drain_ms / 10,
            ),
            Figure(
                "W9", f"the other tenant's {noisy} runs: first queued to all done", drain_ms, "ms"
            ),
        ],
        details=measured,
    )
