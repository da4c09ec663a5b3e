"""The backlog part: runs queued while no worker runs, then drained by two."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from typing import Any

import anyio
import httpx

from bench import client
from bench.context import Context
from bench.procs import BenchError, Service
from bench.workloads.common import ONE_TURN, log, until

POST_LANES = 32  # runs created this many at a time


async def backlog(ctx: Context, service: Service, count: int) -> dict[str, Any]:
    async with client.http(service.url, connections=POST_LANES + 4) as http:
        numbers = iter(range(count))
        began = time.perf_counter()

        async def lane() -> None:
            for _ in numbers:
                run = await client.create(http, ONE_TURN)
                if run["status"] != "queued":
                    raise BenchError(f"a run was {run['status']} with no worker running")

        async with anyio.create_task_group() as group:
            for _ in range(POST_LANES):
                group.start_soon(lane)
        queued_s = time.perf_counter() - began
        log(f"hostile backlog: {count} runs queued in {queued_s:.1f} s; starting 2 workers")

        async def idle() -> bool:
            answer = await http.get("/runs", params={"status": ["queued", "running"], "limit": 1})
            return answer.status_code == 200 and not answer.json()["items"]

        started_wall, started = time.time(), time.perf_counter()
        for _ in range(2):
            service.start_worker()
        drained = True
        try:
            await until(idle, ctx.pick(300, 120), interval=0.2)
        except TimeoutError:
            drained = False
        wall_s = time.perf_counter() - started
        runs = await _all_runs(http)
    statuses = Counter(run["status"] for run in runs)
    begun = [
        datetime.fromisoformat(run["started_at"]).timestamp() for run in runs if run["started_at"]
    ]
    ended = [
        datetime.fromisoformat(run["finished_at"]).timestamp()
        for run in runs
        if run["status"] == "completed"
    ]
    span = max(ended) - min(begun) if ended and begun else None
    rate = len(ended) / span if span else None
    log(f"hostile backlog: {statuses} in {wall_s:.1f} s; {rate or 0:.1f} runs/s once started")
    return {
        "runs": count,
        "drained": drained,
        "statuses": dict(statuses),
        "queue_seconds": queued_s,
        "wall_seconds": wall_s if drained else None,
        "first_start_after_workers_s": min(begun) - started_wall if begun else None,
        "first_start_to_last_finish_s": span,
        "runs_per_s": rate,
    }


async def _all_runs(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        page = (await http.get("/runs", params=params)).json()
        runs += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return runs
