"""W2: a 10-turn tool loop on PostgreSQL (1 API + 2 workers): one run at a time, then saturated.

The durable per-turn overhead is what a turn costs beyond its model call: runs of 10 and of 1
turn alternate one at a time, and for each 10-turn run (its time - the 1-turn runs' median) / 9
- the bare model call's time is the cost of one more turn (its commit with its events, the
engine, the executor), the fixed cost of a run (POST, claim, answer) cancelled out."""

from __future__ import annotations

import statistics
import time
from typing import Any

import anyio

from bench import client
from bench.context import Context
from bench.fake import prompt
from bench.load import percentile
from bench.procs import Resources, Service
from bench.report import Figure, Outcome, at_least, at_most
from bench.workloads.common import ONE_TURN, log, meter, saturate

TURNS = 10
TEN_TURNS = prompt(turns=TURNS)


async def _measure(ctx: Context, service: Service) -> dict[str, Any]:
    async with client.http(service.url) as http:
        for _ in range(10):  # warm-up
            await client.completed(http, TEN_TURNS, TURNS)
        short: list[float] = []
        long: list[float] = []
        cpu = meter(service).start()
        for _ in range(ctx.count(200, 40)):
            for text, turns, into in ((ONE_TURN, 1, short), (TEN_TURNS, TURNS, long)):
                began = time.perf_counter()
                await client.completed(http, text, turns)
                into.append(time.perf_counter() - began)
        sequential_cpu = cpu.stop()
        found = await saturate(
            service,
            http,
            text=TEN_TURNS,
            turns=TURNS,
            start_rate=2,
            seconds=ctx.pick(10, 3),
            label="w2",
        )
    model = ctx.shared.get("model_ms", 0.0) / 1000
    base = statistics.median(short)
    per_turn = [((run - base) / (TURNS - 1) - model) * 1000 for run in long]
    return {
        "per_turn_ms": per_turn,
        "one_turn_median_ms": base * 1000,
        "ten_turn_median_ms": statistics.median(long) * 1000,
        "sequential_cpu_ms_per_turn": {
            name: ms / (len(short) + TURNS * len(long)) for name, ms in sequential_cpu.items()
        },
        "saturation": found,
    }


def run(ctx: Context) -> Outcome:
    with Resources() as stack:
        service = ctx.service(stack, "w2")
        measured = anyio.run(_measure, ctx, service)
    per_turn, found = measured["per_turn_ms"], measured.pop("saturation")
    p50, p99 = percentile(per_turn, 50), percentile(per_turn, 99)
    turns_per_s = found.best.throughput * TURNS
    service_cpu = found.service_ms_per_run
    log(f"w2: per-turn overhead p50 {p50} ms, p99 {p99} ms; {turns_per_s:.0f} turns/s")
    return Outcome(
        figures=[
            Figure(
                "W2",
                "durable per-turn overhead p50 (one run at a time)",
                p50,
                "ms",
                "<= 1.5 ms",
                at_most(p50, 1.5),
            ),
            Figure("W2", "durable per-turn overhead p99", p99, "ms", "<= 5 ms", at_most(p99, 5)),
            Figure(
                "W2",
                "turns/s at saturation (10-turn runs)",
                turns_per_s,
                "/s",
                ">= 1,000/s",
                at_least(turns_per_s, 1000),
            ),
            Figure(
                "W2",
                "service CPU per turn (at saturation)",
                service_cpu / TURNS if service_cpu else None,
                "ms",
            ),
        ],
        details=measured
        | {"saturation": found.details(), "model_ms_subtracted": ctx.shared.get("model_ms")},
    )
