"""Hostile: what a backlog, large tool outputs and greedy clients cost, on PostgreSQL (1 API +
2 workers), each part on a service of its own (but the flood, after the backlog's) so none
inherits another's memory. Counts are full / `--quick`.

- **backlog**: 2,000 / 300 one-turn runs queued through the API while no worker runs, then 2
  workers started: runs/s from the first run started to the last finished (the runs' own
  timestamps), and seconds from starting the workers until the API lists nothing queued or
  running (their start-up included).
- **memory**, with the bench's own agents (`bench.agents`: `blob` returns K KiB of text):
  (a) the API's RSS while and after a run whose tool returned 50 MiB is read whole and listed
  (`GET /runs?limit=100`), and the sizes of those answers; (b) the API's RSS before, and at
  its peak while 30 / 10 readers hold `GET /runs/{id}/events` of a completed run with 8 / 4
  outputs of 4 MiB and read nothing (raw sockets with a small receive buffer), until all are
  full and the RSS is still, or 28 s; once with `MAX_TOOL_OUTPUT_BYTES` at 8 MiB (nothing cut:
  the streams' own memory) and once at its default (1 MiB). Runs are awaited in the database,
  so the API never reads one before it is measured.
- **flood**: one client opens 2,000 / 1,000 event streams of a parked run all at once and holds
  those accepted; meanwhile another times `GET /runs/{id}` (20/s, open loop) until every stream
  was answered, then for 5 s more while the accepted are held, against the same for 10 / 5 s
  before the flood; streams accepted, refused (429) and failed.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio

from bench.context import Context
from bench.procs import Resources, Service
from bench.report import Figure, Outcome
from bench.workloads.common import log
from bench.workloads.hostile.backlog import backlog
from bench.workloads.hostile.flood import flood
from bench.workloads.hostile.memory import (
    BLOBS,
    LARGE_KIB,
    STREAMED_KIB,
    UNCUT,
    idle_streams,
    large_output,
)

Measure = Callable[[Service], Awaitable[dict[str, Any]]]


def _part(details: dict[str, Any], name: str, measure: Callable[[], dict[str, Any]]) -> None:
    """One part's details, or its error: a part that fails must not cost the others'."""
    log(f"--- hostile {name}")
    began = time.perf_counter()
    try:
        details[name] = measure()
    except Exception as exc:
        traceback.print_exc()
        details[name] = {"error": f"{type(exc).__name__}: {exc}"}
    details[name]["part_seconds"] = round(time.perf_counter() - began, 1)


def _backlog_and_flood(ctx: Context, runs: int, streams: int) -> dict[str, Any]:
    details: dict[str, Any] = {}
    with Resources() as stack:
        service = ctx.service(stack, "hostile-backlog", workers=0)
        _part(details, "backlog", lambda: anyio.run(backlog, ctx, service, runs))
        while len(service.workers) < 2:  # the backlog failed before it started them
            service.start_worker()
        _part(details, "flood", lambda: anyio.run(flood, ctx, service, streams))
    return details


def _memory(ctx: Context, name: str, settings: dict[str, str], part: Measure) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    # Returned after the block: mypy reads the bool of Resources.__exit__ as "may swallow".
    with Resources() as stack:
        service = ctx.service(stack, f"hostile-{name}", settings=BLOBS | settings)
        measured |= anyio.run(part, service)
    return measured


def _figures(details: dict[str, Any]) -> list[Figure]:
    backlog = details.get("backlog", {})
    large = details.get("large_output", {})
    uncut, capped = details.get("idle_readers_uncut", {}), details.get("idle_readers_capped", {})
    flood = details.get("flood", {})
    alone, burst = flood.get("get_run_alone", {}), flood.get("get_run_until_all_answered", {})
    holding = flood.get("get_run_while_held", {})
    # Counts as measured, so a quick run's figures say so ("?" where a part failed).
    runs, streams = backlog.get("runs", "?"), flood.get("streams", "?")
    readers, outputs = uncut.get("readers", "?"), uncut.get("outputs", "?")

    def figure(name: str, value: Any, unit: str) -> Figure:
        return Figure("hostile", name, None if value is None else float(value), unit)

    def rss(part: dict[str, Any], when: str) -> Any:
        return part.get("api_rss_mib", {}).get(when)

    idle = f"{readers} idle readers of {outputs} x {STREAMED_KIB // 1024} MiB outputs"
    return [
        figure(f"backlog: {runs} queued runs drained, runs/s", backlog.get("runs_per_s"), "/s"),
        figure("backlog: s from starting 2 workers to all done", backlog.get("wall_seconds"), "s"),
        figure(
            f"memory: run JSON, tool output {LARGE_KIB // 1024} MiB",
            large.get("run_json_mib"),
            "MiB",
        ),
        figure("memory: GET /runs?limit=100 JSON", large.get("list_json_mib"), "MiB"),
        figure("memory: API peak RSS serving those two", rss(large, "peak"), "MiB"),
        figure("memory: API RSS after them", rss(large, "after"), "MiB"),
        figure(f"memory: API RSS before {idle}", rss(uncut, "before"), "MiB"),
        figure("memory: API peak RSS with them, cap 8 MiB (uncut)", rss(uncut, "peak"), "MiB"),
        figure("memory: API RSS before them, default cap", rss(capped, "before"), "MiB"),
        figure("memory: API peak RSS with them, default cap", rss(capped, "peak"), "MiB"),
        figure("flood: GET /runs/{id} p50 alone", alone.get("p50_ms"), "ms"),
        figure("flood: GET /runs/{id} p99 alone", alone.get("p99_ms"), "ms"),
        figure(f"flood: GET p50 until {streams} streams answered", burst.get("p50_ms"), "ms"),
        figure("flood: GET p99 until then", burst.get("p99_ms"), "ms"),
        figure("flood: GET p99 while the accepted are held", holding.get("p99_ms"), "ms"),
        figure("flood: streams accepted", flood.get("accepted"), ""),
        figure("flood: streams refused (429)", flood.get("refused_429"), ""),
    ]


def run(ctx: Context) -> Outcome:
    details = _backlog_and_flood(ctx, ctx.count(2000, 300), ctx.count(2000, 1000))
    idle = partial(idle_streams, outputs=ctx.count(8, 4), readers=ctx.count(30, 10))
    parts: tuple[tuple[str, dict[str, str], Measure], ...] = (
        ("large_output", {}, large_output),
        ("idle_readers_uncut", {"MAX_TOOL_OUTPUT_BYTES": UNCUT}, idle),
        ("idle_readers_capped", {}, idle),
    )
    for name, settings, part in parts:
        _part(details, name, partial(_memory, ctx, name, settings, part))
    failed = {name: part["error"] for name, part in details.items() if "error" in part}
    error = "; ".join(f"{name}: {message}" for name, message in failed.items()) or None
    return Outcome(figures=_figures(details), details=details, error=error)
