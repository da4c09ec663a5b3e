"""W7: many SSE watchers of one run on one API process (PostgreSQL, 2 workers: the deltas cross
processes as they do in production): the lag of every `message.delta`, then reconnects with
`Last-Event-ID` that must replay exactly the stored events after it.

The fake stamps each streamed word with the wall-clock time it sent it, so a watcher's lag is
its receive time less the stamp: the whole path, fake -> worker -> NOTIFY -> API -> watcher."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from httpx_sse import aconnect_sse

from bench import client
from bench.context import Context
from bench.cpu import rss_mib
from bench.fake import prompt
from bench.load import percentile
from bench.procs import Resources, Service
from bench.report import Figure, Outcome, at_most
from bench.workloads.common import log, meter

WORDS = 100
GAP_SECONDS = 0.02
ENDED = ("run.completed", "run.failed", "run.cancelled")


@dataclass
class Watcher:
    stored: list[tuple[str, str]] = field(default_factory=list)  # (id, event)
    lags: list[float] = field(default_factory=list)
    words: int = 0


async def _follow(
    http: httpx.AsyncClient, run_id: str, watcher: Watcher, after: str | None = None
) -> None:
    headers = {"Last-Event-ID": after} if after is not None else {}
    async with aconnect_sse(http, "GET", f"/runs/{run_id}/events", headers=headers) as source:
        async for sse in source.aiter_sse():
            if not sse.data:
                # A keep-alive comment: httpx-sse dispatches it as an empty `message` carrying
                # the last event id (the spec says not to), which read as event 3 twice.
                continue
            if sse.event == "message.delta":
                now = time.time()
                stamps = [float(word) for word in json.loads(sse.data)["text"].split()]
                watcher.lags += [now - stamp for stamp in stamps]
                watcher.words += len(stamps)
                continue
            watcher.stored.append((sse.id, sse.event))
            if sse.event in ENDED:
                return


async def _measure(ctx: Context, service: Service, watchers: int) -> dict[str, Any]:
    attach_s = ctx.pick(10.0, 4.0)  # the model's delay before its first word: time to attach
    text = prompt(turns=1, words=WORDS, gap=GAP_SECONDS, stamp=1, delay=attach_s)
    crowd = [Watcher() for _ in range(watchers)]
    errors: Counter[str] = Counter()
    async with client.http(service.url, connections=watchers + 10, timeout=120) as http:
        cpu = meter(service).start()
        rss_before = rss_mib(service.api.pid)
        run_id = (await client.create(http, text))["id"]

        async def watch(watcher: Watcher) -> None:
            try:
                await _follow(http, run_id, watcher)
            except (httpx.HTTPError, ValueError) as exc:
                errors[f"watch: {type(exc).__name__}: {exc}"[:200]] += 1

        with anyio.fail_after(attach_s + 120):
            async with anyio.create_task_group() as group:
                for watcher in crowd:
                    group.start_soon(watch, watcher)
        used = cpu.stop()
        rss_peak = rss_mib(service.api.pid)
        full = Watcher()
        await _follow(http, run_id, full)
        mismatched = {"live": 0, "reconnect": 0}
        examples: list[dict[str, Any]] = []

        def differs(kind: str, got: list[tuple[str, str]], want: list[tuple[str, str]]) -> None:
            if got != want:
                mismatched[kind] += 1
                if len(examples) < 3:
                    examples.append({"kind": kind, "got": got, "expected": want})

        async def reconnect(i: int, watcher: Watcher) -> None:
            cut = i % len(full.stored)  # resume after each stored event in turn
            again = Watcher()
            try:
                await _follow(http, run_id, again, after=full.stored[cut][0])
            except (httpx.HTTPError, ValueError) as exc:
                errors[f"reconnect: {type(exc).__name__}: {exc}"[:200]] += 1
            differs("live", watcher.stored, full.stored)
            differs("reconnect", again.stored, full.stored[cut + 1 :])

        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                for i, watcher in enumerate(crowd):
                    group.start_soon(reconnect, i, watcher)
    lags = [lag * 1000 for watcher in crowd for lag in watcher.lags]
    return {
        "watchers": watchers,
        "words_per_watcher": {
            "expected": WORDS,
            "min": min(w.words for w in crowd),
            "max": max(w.words for w in crowd),
        },
        "lag_ms": {
            "p50": percentile(lags, 50),
            "p99": percentile(lags, 99),
            "max": percentile(lags, 100),
        },
        "stored_events": len(full.stored),
        "mismatched": mismatched,
        "mismatch_examples": examples,
        "errors": dict(errors),
        "api_rss_mib": {"before": rss_before, "streaming": rss_peak},
        "cpu_ms": used,
    }


def run(ctx: Context) -> Outcome:
    watchers = ctx.count(1000, 200)
    with Resources() as stack:
        # The crowd is one client: its streams are let past the per-client bound.
        service = ctx.service(stack, "w7", settings={"MAX_STREAMS_PER_CLIENT": str(watchers + 10)})
        alone = anyio.run(_measure, ctx, service, 1)  # the path's own lag, with no crowd
        measured = anyio.run(_measure, ctx, service, watchers)
    measured["one_watcher"] = alone
    p99 = measured["lag_ms"]["p99"]
    short = measured["words_per_watcher"]["min"] < WORDS
    live, replayed = measured["mismatched"]["live"], measured["mismatched"]["reconnect"]
    failed = sum(measured["errors"].values())
    log(f"w7: lag {measured['lag_ms']}, mismatched {measured['mismatched']}, errors {failed}")
    return Outcome(
        figures=[
            Figure(
                "W7",
                f"delta lag p99, {watchers} watchers on one API process",
                p99,
                "ms",
                "<= 50 ms",
                at_most(p99, 50),
            ),
            Figure("W7", "delta lag p99, one watcher", alone["lag_ms"]["p99"], "ms"),
            Figure(
                "W7",
                "API CPU per delta per watcher",
                measured["cpu_ms"].get("api", 0) / (watchers * WORDS),
                "ms",
            ),
            Figure("W7", "watchers that missed deltas", float(short), "", "0", not short),
            Figure(
                "W7",
                "live streams whose stored events differ from the log",
                live,
                "",
                "0",
                live == 0,
            ),
            Figure(
                "W7",
                "reconnects not replayed exactly (or failed)",
                replayed + failed,
                "",
                "0",
                replayed + failed == 0,
            ),
        ],
        details=measured,
    )
