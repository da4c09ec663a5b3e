"""Chaos: SIGKILL a random worker every 5-30 s while runs arrive at half of W1's load, on
PostgreSQL (1 API + 2 workers, each killed one replaced at once). Every run must finish, or
park `pending_approval` with its unsafe call in doubt (as the contract says for `unsafe` tools);
none lost; a killed worker's runs taken over within the lease + 2 s.

Runs are 3 turns with a model delay, so kills find runs mid-turn; one in four calls `refund`
(`unsafe`: a takeover after it started parks the run in doubt), the rest `add` (`read`: rerun)."""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import asyncpg

from bench import client
from bench.context import Context
from bench.fake import prompt
from bench.load import open_loop, percentile
from bench.procs import Resources, Service
from bench.report import Figure, Outcome, at_most
from bench.workloads.common import log, until

LEASE_SECONDS = 5.0
SETTINGS = {"LEASE_SECONDS": "5", "HEARTBEAT_SECONDS": "1", "POLL_INTERVAL_SECONDS": "0.5"}
TURNS = 3
SAFE = prompt(turns=TURNS, delay=0.1)
UNSAFE = prompt(turns=TURNS, delay=0.1, tool="refund")
DEFAULT_W1 = 40.0  # runs/s, when W1 did not run in this suite run


@dataclass
class Kill:
    at: float
    held: dict[str, int]  # running runs at the kill -> their takeovers then
    taken: dict[str, float] = field(default_factory=dict)  # run -> seconds to its takeover


async def _killer(
    service: Service,
    db: asyncpg.Connection,
    kills: list[Kill],
    gap: tuple[float, float],
    stop: anyio.Event,
) -> None:
    while True:
        with anyio.move_on_after(random.uniform(*gap)):
            await stop.wait()
        if stop.is_set():
            return
        rows = await db.fetch("SELECT id, takeovers FROM runs WHERE status = 'running'")
        victim = random.choice([w for w in service.workers if w.poll() is None])
        victim.send_signal(signal.SIGKILL)
        kills.append(Kill(time.perf_counter(), {r["id"]: r["takeovers"] for r in rows}))
        log(f"chaos: killed worker {victim.pid} with {len(rows)} runs running")
        service.start_worker()


async def _tracker(db: asyncpg.Connection, kills: list[Kill], stop: anyio.Event) -> None:
    """Notes when each run running at a kill is taken over (its `takeovers` rises)."""
    while not (stop.is_set() and all(not k.held for k in kills)):
        for kill in kills:
            if not kill.held:
                continue
            rows = await db.fetch(
                "SELECT id, takeovers, status FROM runs WHERE id = ANY($1::text[])", list(kill.held)
            )
            now = time.perf_counter() - kill.at
            for row in rows:
                if row["takeovers"] > kill.held[row["id"]]:
                    kill.taken[row["id"]] = now
                if row["takeovers"] > kill.held[row["id"]] or row["status"] != "running":
                    del kill.held[row["id"]]  # resolved: taken over, or a survivor's run moved on
            if now > 60:
                kill.held.clear()  # never taken over: counted by the final check instead
        await anyio.sleep(0.1)


async def _verdicts(db: asyncpg.Connection, posted: dict[str, bool]) -> dict[str, Any]:
    rows = await db.fetch(
        "SELECT r.id, r.status, r.error, bool_or(a.in_doubt AND a.status = 'pending') AS doubt"
        " FROM runs r LEFT JOIN approvals a ON a.run_id = r.id"
        " WHERE r.id = ANY($1::text[]) GROUP BY r.seq",
        list(posted),
    )
    verdicts: dict[str, int] = {
        "completed": 0,
        "parked_in_doubt": 0,
        "lost": len(posted) - len(rows),
    }
    for row in rows:
        unsafe = posted[row["id"]]
        if row["status"] == "completed":
            verdicts["completed"] += 1
        elif row["status"] == "pending_approval" and row["doubt"] and unsafe:
            verdicts["parked_in_doubt"] += 1
        elif row["status"] in ("queued", "running"):
            verdicts["lost"] += 1
        else:
            key = f"wrong: {row['status']} {'unsafe' if unsafe else 'read'} {row['error']}"[:120]
            verdicts[key] = verdicts.get(key, 0) + 1
    return verdicts


async def _measure(ctx: Context, service: Service, rate: float, seconds: float) -> dict[str, Any]:
    posted: dict[str, bool] = {}  # run id -> whether it calls the unsafe tool
    kills: list[Kill] = []
    gap = (5.0, 30.0) if not ctx.quick else (5.0, 10.0)
    db = await asyncpg.connect(service.dsn)
    try:
        async with client.http(service.url) as http:

            async def send(i: int) -> None:
                unsafe = i % 4 == 0
                run = await client.create(http, UNSAFE if unsafe else SAFE)
                posted[run["id"]] = unsafe

            stop = anyio.Event()
            async with anyio.create_task_group() as group:
                group.start_soon(_killer, service, db, kills, gap, stop)
                group.start_soon(_tracker, db, kills, stop)
                step = await open_loop(send, rate, seconds, max_in_flight=500)
                stop.set()

            async def all_rest() -> bool:
                unfinished: int = await db.fetchval(
                    "SELECT count(*) FROM runs WHERE id = ANY($1::text[])"
                    " AND status IN ('queued', 'running')",
                    list(posted),
                )
                return unfinished == 0

            try:
                await until(all_rest, LEASE_SECONDS + 60, interval=0.5)
            except TimeoutError:
                log("chaos: some runs never came to rest")
        verdicts = await _verdicts(db, posted)
    finally:
        await db.close()
    takeovers = [s for kill in kills for s in kill.taken.values()]
    return {
        "settings": SETTINGS,
        "rate_per_s": rate,
        "seconds": seconds,
        "posted": len(posted),
        "post_errors": dict(step.errors),
        "kills": len(kills),
        "taken_over": len(takeovers),
        "takeover_s": {
            "p50": percentile(takeovers, 50),
            "p99": percentile(takeovers, 99),
            "max": percentile(takeovers, 100),
        },
        "verdicts": verdicts,
    }


def run(ctx: Context) -> Outcome:
    rate = ctx.shared.get("w1_saturation", DEFAULT_W1) / 2 / TURNS  # half of W1's turns/s
    with Resources() as stack:
        service = ctx.service(stack, "chaos", settings=SETTINGS)
        measured = anyio.run(_measure, ctx, service, rate, ctx.pick(300, 30))
    verdicts = measured["verdicts"]
    good = verdicts["completed"] + verdicts["parked_in_doubt"]
    share = good / measured["posted"] * 100 if measured["posted"] else None
    p99 = measured["takeover_s"]["p99"]
    log(f"chaos: {measured['kills']} kills, {verdicts}, takeover {measured['takeover_s']}")
    return Outcome(
        figures=[
            Figure(
                "chaos",
                f"runs finished or parked in doubt ({measured['posted']} runs,"
                f" {measured['kills']} kills)",
                share,
                "%",
                "100%",
                share == 100,
            ),
            Figure("chaos", "runs lost", verdicts["lost"], "", "0", verdicts["lost"] == 0),
            Figure(
                "chaos",
                "runs parked in doubt (unsafe call cut by a kill)",
                verdicts["parked_in_doubt"],
                "",
            ),
            Figure(
                "chaos",
                f"takeover p99 (lease {LEASE_SECONDS:g} s)",
                p99,
                "s",
                f"<= {LEASE_SECONDS + 2:g} s",
                at_most(p99, LEASE_SECONDS + 2),
            ),
        ],
        details=measured,
    )
