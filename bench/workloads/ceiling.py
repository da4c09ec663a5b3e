"""The fake model alone, through the bare `openai` client: the ceiling no workload can pass,
and the model's own time per call, which latencies "beyond the model" subtract."""

from __future__ import annotations

import time
from typing import Any

import anyio
import openai

from bench.context import Context
from bench.cpu import CpuMeter
from bench.fake import prompt
from bench.load import closed_loop
from bench.report import Figure, Outcome

CONCURRENCY = 32


async def _measure(base_url: str, fake_pid: int, calls: int) -> tuple[dict[str, Any], float, float]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    text = prompt(turns=1)

    async def call(_: int) -> None:
        stream = await client.chat.completions.create(
            model="bench",
            messages=[{"role": "user", "content": text}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for _chunk in stream:
            pass

    try:
        await closed_loop(call, 200, CONCURRENCY)  # warm-up: connections, caches
        one = await closed_loop(call, min(calls, 500), 1)
        meter = CpuMeter({"fake": fake_pid}).start()
        many = await closed_loop(call, calls, CONCURRENCY)
        used = meter.stop()
    finally:
        await client.close()
    details = {
        "sequential": one.summary(),
        "concurrent": many.summary() | {"concurrency": CONCURRENCY},
        "cpu_ms_per_call": {name: ms / max(1, many.completed) for name, ms in used.items()},
        "fake_cpu_busy": used.get("fake", 0) / 1000 / many.seconds,
    }
    return details, many.throughput, one.ms(50) or 0.0


def run(ctx: Context) -> Outcome:
    started = time.perf_counter()
    details, calls_per_s, model_ms = anyio.run(
        _measure, ctx.fake.base_url, ctx.fake.pid, ctx.count(6000, 2000)
    )
    ctx.shared["model_ms"] = model_ms
    ctx.shared["ceiling"] = calls_per_s
    details["seconds"] = time.perf_counter() - started
    return Outcome(
        figures=[
            Figure("ceiling", "bare openai calls/s against the fake", calls_per_s, "/s"),
            Figure("ceiling", "one streamed call, p50 (the model's own time)", model_ms, "ms"),
            # The client, not the fake, limits the calls/s: the fake's CPU per call says how far.
            Figure(
                "ceiling", "the fake's CPU per call", details["cpu_ms_per_call"].get("fake"), "ms"
            ),
        ],
        details=details,
    )
