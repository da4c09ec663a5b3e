"""W1: one-turn runs over HTTP, on PostgreSQL (1 API + 2 workers) and on SQLite (one process):
completed runs/s at saturation, then POST -> first `message.delta` at half of it."""

from __future__ import annotations

from typing import Any

import anyio
from httpx_sse import aconnect_sse

from bench import client
from bench.context import Context
from bench.fake import prompt
from bench.load import Failed, open_loop
from bench.procs import Resources, Service
from bench.report import Figure, Outcome, at_least, at_most
from bench.workloads.common import ONE_TURN, log, meter, saturate_one_turn

MODEL_DELAY = 0.05  # before the first delta: the event stream attaches meanwhile
DELTA_TEXT = prompt(turns=1, delay=MODEL_DELAY)
ENDED = ("run.completed", "run.failed", "run.cancelled", "run.pending_approval")


async def _measure(ctx: Context, service: Service, database: str) -> dict[str, Any]:
    async with client.http(service.url) as http:
        for _ in range(20):  # warm-up: connections, the pools, the first claims
            await client.completed(http, ONE_TURN, 1)
        found = await saturate_one_turn(ctx, service, http, start_rate=20, label=f"w1 {database}")
    half = found.best.throughput / 2
    # A client of its own, not the one the sweep's saturated last step left behind: with that
    # one, a full run's driver fell behind its own schedule at half the rate (886 of 894
    # streams attached after their run had ended), where a fresh client kept up at that rate.
    async with client.http(service.url) as http:
        for _ in range(20):
            await client.completed(http, ONE_TURN, 1)

        async def send(_: int) -> None:
            """Returns at the run's first delta: the step's latencies are POST -> delta."""
            run = await client.create(http, DELTA_TEXT)
            async with aconnect_sse(http, "GET", f"/runs/{run['id']}/events") as source:
                async for sse in source.aiter_sse():
                    if sse.event == "message.delta":
                        return
                    if sse.event in ENDED:
                        raise Failed(f"{sse.event} came before any delta: attached too late")
            raise Failed("the stream ended without a message.delta")

        watched = meter(service).start()
        step = await open_loop(send, half, ctx.pick(15, 4), max_in_flight=1000)
        cpu = watched.stop()
    model_s = MODEL_DELAY + ctx.shared.get("model_ms", 0.0) / 1000
    step.latencies = [latency - model_s for latency in step.latencies]  # beyond the model
    log(f"w1 {database}: first delta at {half:.0f}/s: p50 {step.ms(50)} ms, p99 {step.ms(99)} ms")
    return {
        "saturation": found,
        "delta": step,
        "half": half,
        "delta_cpu_ms_per_run": {k: v / max(1, step.completed) for k, v in cpu.items()},
    }


def run(ctx: Context) -> Outcome:
    outcome = Outcome()
    for database in ("postgres", "sqlite"):
        with Resources() as stack:
            service = ctx.service(stack, f"w1-{database}", database=database)
            measured = anyio.run(_measure, ctx, service, database)
        found, delta = measured["saturation"], measured["delta"]
        rate = found.best.throughput
        if database == "postgres":
            ctx.shared["w1_saturation"] = rate
        target = "" if database == "sqlite" else ">= 250/s"
        outcome.figures += [
            Figure(
                "W1",
                f"{database}: one-turn runs/s at saturation",
                rate,
                "/s",
                target,
                at_least(rate, 250) if target else None,
            ),
            Figure(
                "W1",
                f"{database}: first delta p50 beyond the model, at {measured['half']:.0f}/s",
                delta.ms(50),
                "ms",
                "<= 5 ms",
                at_most(delta.ms(50), 5),
            ),
            Figure("W1", f"{database}: first delta p99 beyond the model", delta.ms(99), "ms"),
            Figure(
                "W1",
                f"{database}: service CPU per run (at saturation)",
                found.service_ms_per_run,
                "ms",
            ),
        ]
        if "postgres" in found.cpu_ms_per_run:
            pg_ms = found.cpu_ms_per_run["postgres"]
            outcome.figures.append(Figure("W1", "postgres: PostgreSQL CPU per run", pg_ms, "ms"))
        outcome.details[database] = {
            "saturation": found.details(),
            "first_delta": delta.summary() | {"cpu_ms_per_run": measured["delta_cpu_ms_per_run"]},
            "model_ms_subtracted": MODEL_DELAY * 1000 + ctx.shared.get("model_ms", 0.0),
        }
    return outcome
