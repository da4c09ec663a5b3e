"""Event streams of the agent-runs service: first-delta latency and the cost of fan-out.

What it measures
----------------
Everything runs as separate processes, as in production, and as in `bench/service.py`:

- the fake model: `agent-runs fake-model` serving a script written to a temp dir. Its replies
  stream one word per chunk and have no delay, except where said below.
- the service: `agent-runs serve` (API and embedded executor, so on PostgreSQL too the deltas
  reach the event streams in-process) on a free 127.0.0.1 port, with the bundled example agents
  (`triage`), OPENAI_BASE_URL pointing at the fake, LOG_LEVEL=warning and CONCURRENCY=32
  (`--server-concurrency`). Its database is a fresh SQLite file in the temp dir, or a throwaway
  PostgreSQL started with `.ci/postgres.sh start` and migrated with `agent-runs migrate`.
- this driver: one process, one event loop, `httpx.AsyncClient` and `httpx_sse.aconnect_sse`.

1. First-delta latency. Saturation is measured first, roughly: one-turn runs (a five-word answer,
   no delay) through `POST /runs?wait=30`, `--concurrency` (16) in flight, closed loop; `sat
   runs/s` is their rate, and `svc cpu ms/run sat` the service's CPU per run meanwhile. Then
   `--runs` (200) watched runs are started open loop at half that rate (a run starts on its
   schedule whether or not the earlier ones have finished; `paced/s` is the rate achieved). One
   watched run is `POST /runs` (no wait), then, as soon as that answers, `GET /runs/{id}/events`
   read to its end. Deltas are live only, never replayed, so the stream must be attached before
   the model streams: the fake is scripted to wait `--delay` (0.05 s) before it answers these
   runs. Both figures are printed: `delta raw`, POST sent -> first `message.delta` received, which
   includes that scripted wait, and `delta net`, the same minus the wait: the service's own
   latency from the POST to a client seeing the model's first text (queueing, claiming, the model
   request, the delta's way to the stream), as if the model answered at once. For reference:
   `POST` (the POST's own answer), `started` (POST sent -> the `run.started` event received) and
   `completed` (POST sent -> `run.completed` received); `started>delta` counts the runs whose
   `run.started` came after their first delta. `svc cpu ms/run paced` is the service's CPU per
   watched run, `cpu busy` the CPU time of all the processes over wall time x CPUs. A run is
   checked: the stream must bring `run.started`, the assistant's `message` with the scripted
   answer, and `run.completed`. A run whose deltas do not add up to the whole answer attached too
   late (`late`: its first delta is then a later one, and its figure is still counted) or lost
   some; a run with no delta at all, or failing a check, counts as an error. Percentiles are
   nearest-rank over the runs without error.

2. Fan-out. One run whose answer is `--words` (2000) words, streamed one word per chunk with
   `--chunk-delay` (0.001 s) between chunks (2-4 s of streaming), after a scripted wait of
   `--fanout-delay` (3 s) so that watchers can attach before the first word (on SQLite, 100 take
   about a second on the reference machine: their first reads share the one connection). It is
   run with 0 watchers and with `--watchers` (100) SSE clients that open `GET /runs/{id}/events`
   right after the POST answers; `--repeats` (3) times each, alternating, after an uncounted
   warm-up of each. In both cases a poller reads `GET /runs/{id}` every 0.25 s until the run has
   ended, so the baseline is a run that nobody streams. Reported per case:
   - `run s`: the run's own wall time, `finished_at - started_at` as the service stored them (it
     includes the scripted wait); `done s`: POST sent -> every watcher's stream closed (or the run
     seen ended, with no watchers).
   - CPU ms of the service (`svc`), the fake, PostgreSQL (all its processes) and this driver, read
     from /proc from just before the POST to `done`; the summary line gives the service's extra CPU
     with watchers (medians) per watcher and per event delivered to a watcher.
   - per watcher: when it was watching (`attach ms`: POST sent -> its first stored event, p50
     and max over the watchers; it must be well under the scripted wait), the stored events
     received (all watchers must receive the same ones, `same`, the same as a replay of the
     finished run: `stored`), the deltas received (min-max: a slow reader loses deltas,
     never stored events), and the first delta's arrival after the POST minus the scripted wait
     (min/p50/max over the watchers: the spread of one fan-out). A watcher whose first stored
     event came after the scripted wait, or whose first delta is not the answer's first word, was
     not watching in time (`late`; the case is then flagged).

The driver is one Python process parsing every event of every watcher: with 100 watchers of a
2000-word answer it has up to 200,000 events to parse, so its CPU (`drv`) is about the service's
and competes with it on a small machine. The service drops a watcher's deltas when 512 of them
wait unsent for it (its stream fell behind: a slow reader, or a stream the service itself does not
get to), never its stored events. No CPU pinning: the service, the fake, PostgreSQL and this
driver share the machine's cores (2 on the reference machine); the load average at the start is
printed. The CPU times come from /proc (Linux; `-` elsewhere).

Every process it starts is stopped in `finally` with bounded waits, on success, failure, Ctrl-C
or SIGTERM. The service's log (warnings and errors only) is summarized after each database.

Run it
------
    uv run python bench/events.py                      # both databases, 200 runs, 100 watchers
    uv run python bench/events.py --db sqlite --runs 500 --watchers 50
    uv run python bench/events.py --json figures.json

PostgreSQL needs its server binaries (`pg_config --bindir`); as root they run as `postgres`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import anyio
import httpx
from harness import (
    BenchError,
    LogSummary,
    Resources,
    agent_runs_command,
    child_env,
    cpu_snapshot,
    free_port,
    git_revision,
    migrate,
    postgres,
    running,
    summarize_log,
    tail,
    wait_until_ready,
)
from httpx_sse import SSEError, aconnect_sse

MODEL = "bench-model"
AGENT = "triage"
WAIT_SECONDS = 30
REQUEST_TIMEOUT_SECONDS = WAIT_SECONDS + 30
RUN_TIMEOUT_SECONDS = 60.0  # one watched run, POST to the stream's end
FANOUT_TIMEOUT_SECONDS = 300.0  # one fan-out case, POST to the last watcher's end
POLL_SECONDS = 0.25
POLL_ERRORS = 20  # failed polls of a fan-out run before giving up on it
SATURATION_WARMUP = 30
LATENCY_WARMUP = 10
CPUS = os.cpu_count() or 1

Database = Literal["sqlite", "postgres"]
DATABASES: tuple[Database, ...] = ("sqlite", "postgres")
ENDED = ("completed", "failed", "cancelled")
END_EVENTS = tuple(f"run.{status}" for status in ENDED)

SATURATE_PROMPT = "saturate please"
SATURATE_ANSWER = "Done at full speed, thanks."
LATENCY_PROMPT = "latency please"
LATENCY_ANSWER = "Here is the first text quickly."
FANOUT_PROMPT = "fanout please"


def long_answer(words: int) -> str:
    return " ".join(f"word{i}" for i in range(words))


def script(args: argparse.Namespace) -> dict[str, Any]:
    """The fake's script: a rule per workload, chosen by the run's input."""
    fanout = {
        "content": long_answer(args.words),
        "delay": args.fanout_delay,
        "chunk_delay": args.chunk_delay,
    }
    return {
        MODEL: {
            "rules": [
                {"match": "^saturate", "replies": [{"content": SATURATE_ANSWER}]},
                {
                    "match": "^latency",
                    "replies": [{"content": LATENCY_ANSWER, "delay": args.delay}],
                },
                {"match": "^fanout", "replies": [fanout]},
            ]
        }
    }


class RunFailed(Exception):
    """One run, or one watcher, did not see what the script says."""


FAILURES = (RunFailed, httpx.HTTPError, SSEError, ValueError, KeyError, TypeError, TimeoutError)


# --- figures --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def spread_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50, p99 and max of latencies in seconds, in milliseconds."""
    ms = [value * 1000 for value in seconds]
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": percentile(ms, 100)}


def cpu_used_ms(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: (after[name] - before[name]) * 1000 for name in before.keys() & after}


@dataclass(frozen=True)
class Latency:
    """The first-delta workload on one database."""

    database: str
    saturation_runs_per_s: float
    saturation_errors: int
    saturation_svc_cpu_ms_per_run: float | None  # the service's CPU per unwatched run
    paced_runs_per_s: float  # the schedule: half of saturation
    achieved_runs_per_s: float  # runs started over the time it took to start them all
    max_start_lag_ms: float  # how late this driver started a run, against its schedule
    runs: int  # without error
    errors: int
    late: int  # runs whose deltas were not the whole answer
    started_after_delta: int  # runs whose `run.started` came after their first delta
    delay_ms: float  # the fake's scripted wait before answering
    post_ms: dict[str, float | None]  # POST sent -> its answer
    started_ms: dict[str, float | None]  # POST sent -> `run.started` received
    delta_raw_ms: dict[str, float | None]  # POST sent -> first `message.delta` received
    delta_net_ms: dict[str, float | None]  # the same minus the scripted wait
    completed_ms: dict[str, float | None]  # POST sent -> `run.completed` received
    cpu_ms_per_run: dict[str, float]  # during the paced runs, by process
    cpu_busy: float | None  # that CPU time over wall time x CPUs


@dataclass(frozen=True)
class FanoutCase:
    """One long run watched by `watchers` event streams."""

    watchers: int
    run_s: float | None  # finished_at - started_at, as stored (includes the scripted wait)
    done_s: float  # POST sent -> every stream closed (or the run seen ended)
    cpu_ms: dict[str, float]  # by process, POST to done
    stored_events: int  # in a replay of the finished run
    same_stored: bool  # every watcher received exactly the replay's stored events
    events_delivered: int  # stored events and deltas, over all watchers
    deltas_min: int | None
    deltas_max: int | None
    first_delta_ms: dict[str, float | None]  # min/p50/max over watchers, minus the scripted wait
    late: int  # watchers not watching in time: first stored event after the scripted wait, or
    # first delta not the answer's first word
    attached_ms: dict[str, float | None]  # POST sent -> first stored event, p50/max over watchers
    errors: dict[str, int]


@dataclass(frozen=True)
class FanoutSummary:
    database: str
    watchers: int
    words: int
    chunk_delay: float
    delay: float
    run_s_0: float | None  # medians over the repeats
    run_s_n: float | None
    svc_cpu_ms_0: float | None
    svc_cpu_ms_n: float | None
    svc_cpu_ms_per_watcher: float | None
    svc_cpu_us_per_event: float | None
    cases: list[FanoutCase]


# --- one watched stream ---------------------------------------------------------------------


@dataclass
class Trace:
    """What one client saw of one run, times in seconds since its POST was sent."""

    post: float | None = None
    attached: float | None = None  # the first stored event received: the stream is watching
    started: float | None = None
    first_delta: float | None = None
    first_text: str | None = None
    ended: float | None = None
    end_event: str | None = None
    deltas: int = 0
    text: list[str] = field(default_factory=list)  # the deltas' text, when kept
    stored: list[tuple[str, str]] = field(default_factory=list)  # (id, event) of stored events
    answer: str | None = None  # the assistant message's content, from the `message` event


async def follow(
    client: httpx.AsyncClient, run_id: str, t0: float, trace: Trace, *, keep_text: bool
) -> None:
    """Read the run's event stream to its end into `trace`."""
    async with aconnect_sse(client, "GET", f"/runs/{run_id}/events") as source:
        if source.response.status_code != 200:
            await source.response.aread()
            raise RunFailed(f"GET events answered {source.response.status_code}")
        async for sse in source.aiter_sse():
            now = time.perf_counter() - t0
            if sse.event == "message.delta":
                trace.deltas += 1
                if trace.first_delta is None:
                    trace.first_delta = now
                    trace.first_text = json.loads(sse.data)["text"]
                if keep_text:
                    trace.text.append(json.loads(sse.data)["text"])
                continue
            trace.stored.append((sse.id, sse.event))
            if trace.attached is None:
                trace.attached = now
            if sse.event == "run.started":
                trace.started = now
            elif sse.event == "message":
                message = json.loads(sse.data)["message"]
                if message.get("role") == "assistant":
                    trace.answer = message.get("content")
            elif sse.event in END_EVENTS:
                trace.ended = now
                trace.end_event = sse.event


def check_trace(trace: Trace, answer: str) -> None:
    if trace.end_event != "run.completed":
        raise RunFailed(f"the stream ended with {trace.end_event or 'no end event'}")
    if trace.started is None:
        raise RunFailed("no run.started event")
    if trace.answer != answer:
        raise RunFailed(f"the message event holds {str(trace.answer)[:60]!r}")
    if trace.first_delta is None:
        raise RunFailed("no message.delta: the stream attached after the model had answered")


async def create_run(client: httpx.AsyncClient, prompt: str, **params: Any) -> dict[str, Any]:
    response = await client.post("/runs", params=params, json={"agent": AGENT, "input": prompt})
    if response.status_code not in (201, 202):
        raise RunFailed(f"POST /runs answered {response.status_code}: {response.text[:200]}")
    run: dict[str, Any] = response.json()
    return run


# --- 1. first-delta latency -----------------------------------------------------------------


async def saturation(
    client: httpx.AsyncClient, runs: int, concurrency: int
) -> tuple[float, Counter[str]]:
    """Completed one-turn runs per second, `concurrency` in flight through `?wait`."""
    failures: Counter[str] = Counter()
    left = runs

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            try:
                run = await create_run(client, SATURATE_PROMPT, wait=WAIT_SECONDS)
                if run.get("status") != "completed" or run.get("final_output") != SATURATE_ANSWER:
                    raise RunFailed(f"status {run.get('status')!r}, error {run.get('error')}")
            except FAILURES as exc:
                failures[f"{type(exc).__name__}: {exc}"[:300]] += 1

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(min(concurrency, runs)):
            group.start_soon(worker)
    seconds = time.perf_counter() - started
    done = runs - sum(failures.values())
    return (done / seconds if seconds > 0 else 0.0), failures


async def watched_run(client: httpx.AsyncClient) -> Trace:
    """POST a run, then follow its events to the end; checked against the script."""
    trace = Trace()
    t0 = time.perf_counter()
    with anyio.fail_after(RUN_TIMEOUT_SECONDS):
        run = await create_run(client, LATENCY_PROMPT)
        trace.post = time.perf_counter() - t0
        await follow(client, str(run["id"]), t0, trace, keep_text=True)
    check_trace(trace, LATENCY_ANSWER)
    return trace


@dataclass
class Paced:
    traces: list[Trace]  # of the runs without error
    failures: Counter[str]
    launched_s: float  # the time it took to start them all
    worst_lag_s: float  # the latest a run started, against its schedule
    seconds: float = 0.0  # to the last run's end


async def paced(client: httpx.AsyncClient, count: int, rate: float) -> Paced:
    """`count` watched runs started open loop, `rate` per second."""
    result = Paced([], Counter(), 0.0, 0.0)

    async def one() -> None:
        try:
            result.traces.append(await watched_run(client))
        except FAILURES as exc:
            result.failures[f"{type(exc).__name__}: {exc}"[:300]] += 1

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for index in range(count):
            target = start + index / rate
            wait = target - time.perf_counter()
            if wait > 0:
                await anyio.sleep(wait)
            result.worst_lag_s = max(result.worst_lag_s, time.perf_counter() - target)
            group.start_soon(one)
        result.launched_s = time.perf_counter() - start
    result.seconds = time.perf_counter() - start
    return result


async def latency(
    client: httpx.AsyncClient, args: argparse.Namespace, database: str, pids: Mapping[str, int]
) -> tuple[Latency, Counter[str]]:
    """Saturation first, then watched runs at half of it; the figures and the failures."""
    _, warm = await saturation(client, SATURATION_WARMUP, args.concurrency)
    if warm:
        raise BenchError(f"warm-up runs failed: {dict(warm)}")
    before = cpu_snapshot(pids)
    rate, failures = await saturation(client, args.saturation_runs, args.concurrency)
    saturated = cpu_used_ms(before, cpu_snapshot(pids)).get("service")
    completed = args.saturation_runs - sum(failures.values())
    if rate <= 0:
        raise BenchError(f"no run completed while measuring saturation: {dict(failures)}")
    half = rate / 2
    print(
        f"{database}: saturation {rate:.1f} runs/s, watched runs at {half:.1f}/s", file=sys.stderr
    )
    warm_up = await paced(client, LATENCY_WARMUP, half)
    if warm_up.failures:
        raise BenchError(f"warm-up watched runs failed: {dict(warm_up.failures)}")
    before = cpu_snapshot(pids)
    runs = await paced(client, args.runs, half)
    cpu = cpu_used_ms(before, cpu_snapshot(pids))
    traces, done, delay = runs.traces, len(runs.traces), args.delay
    first = [t.first_delta for t in traces if t.first_delta is not None]
    figures = Latency(
        database=database,
        saturation_runs_per_s=rate,
        saturation_errors=sum(failures.values()),
        saturation_svc_cpu_ms_per_run=saturated / completed if saturated and completed else None,
        paced_runs_per_s=half,
        achieved_runs_per_s=(args.runs - 1) / runs.launched_s if runs.launched_s > 0 else half,
        max_start_lag_ms=runs.worst_lag_s * 1000,
        runs=done,
        errors=sum(runs.failures.values()),
        late=sum(1 for t in traces if "".join(t.text) != LATENCY_ANSWER),
        started_after_delta=sum(
            1 for t in traces if t.started and t.first_delta and t.started > t.first_delta
        ),
        delay_ms=delay * 1000,
        post_ms=spread_ms([t.post for t in traces if t.post is not None]),
        started_ms=spread_ms([t.started for t in traces if t.started is not None]),
        delta_raw_ms=spread_ms(first),
        delta_net_ms=spread_ms([value - delay for value in first]),
        completed_ms=spread_ms([t.ended for t in traces if t.ended is not None]),
        cpu_ms_per_run={name: ms / done for name, ms in cpu.items()} if done else {},
        cpu_busy=sum(cpu.values()) / 1000 / (runs.seconds * CPUS)
        if cpu and runs.seconds > 0
        else None,
    )
    return figures, failures + runs.failures


# --- 2. fan-out -----------------------------------------------------------------------------


def stored_seconds(run: Mapping[str, Any]) -> float | None:
    """finished_at - started_at of a run as the API shows it."""
    try:
        started = datetime.fromisoformat(str(run["started_at"]))
        finished = datetime.fromisoformat(str(run["finished_at"]))
    except (KeyError, TypeError, ValueError):
        return None
    return (finished - started).total_seconds()


async def fanout_case(
    base_url: str, watchers: int, args: argparse.Namespace, pids: Mapping[str, int]
) -> FanoutCase:
    """One long run with `watchers` event streams attached right after its POST."""
    answer = long_answer(args.words)
    first_word = answer.split(" ", 1)[0]
    failures: Counter[str] = Counter()
    traces = [Trace() for _ in range(watchers)]
    final: dict[str, Any] = {}
    size = watchers + 8
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:
        before = cpu_snapshot(pids)
        t0 = time.perf_counter()
        try:
            with anyio.fail_after(FANOUT_TIMEOUT_SECONDS):
                run_id = str((await create_run(client, FANOUT_PROMPT))["id"])

                async def watch(trace: Trace) -> None:
                    try:
                        await follow(client, run_id, t0, trace, keep_text=False)
                        check_trace(trace, answer)
                    except FAILURES as exc:
                        failures[f"watcher: {type(exc).__name__}: {exc}"[:300]] += 1

                async def poll() -> None:
                    errors = 0
                    while errors < POLL_ERRORS:  # a service that stopped answering: give up
                        try:
                            response = await client.get(f"/runs/{run_id}")
                            response.raise_for_status()
                            body = response.json()
                        except (httpx.HTTPError, ValueError) as exc:
                            failures[f"poll: {type(exc).__name__}: {exc}"[:300]] += 1
                            errors, body = errors + 1, {}
                        if body.get("status") in ENDED:
                            final.update(body)
                            return
                        await anyio.sleep(POLL_SECONDS)

                async with anyio.create_task_group() as group:
                    for trace in traces:
                        group.start_soon(watch, trace)
                    group.start_soon(poll)
        except TimeoutError:
            raise BenchError(
                f"a run with {watchers} watchers did not end within {FANOUT_TIMEOUT_SECONDS:g} s"
            ) from None
        done = time.perf_counter() - t0
        cpu = cpu_used_ms(before, cpu_snapshot(pids))
        replay = Trace()  # the finished run's stored events, outside the measured window
        with anyio.fail_after(RUN_TIMEOUT_SECONDS):
            await follow(client, run_id, time.perf_counter(), replay, keep_text=False)
    if final.get("status") != "completed" or final.get("final_output") != answer:
        failures[f"run: status {final.get('status')!r}, error {final.get('error')}"] += 1
    if replay.deltas or replay.end_event != "run.completed":
        failures[f"replay: {replay.deltas} deltas, ended with {replay.end_event}"] += 1
    first = [(t.first_delta - args.fanout_delay) * 1000 for t in traces if t.first_delta]
    deltas = [t.deltas for t in traces]
    attached = [t.attached * 1000 for t in traces if t.attached is not None]
    return FanoutCase(
        watchers=watchers,
        run_s=stored_seconds(final),
        done_s=done,
        cpu_ms=cpu,
        stored_events=len(replay.stored),
        same_stored=all(t.stored == replay.stored for t in traces),
        events_delivered=sum(len(t.stored) + t.deltas for t in traces),
        deltas_min=min(deltas) if deltas else None,
        deltas_max=max(deltas) if deltas else None,
        first_delta_ms={
            "min": percentile(first, 0),
            "p50": percentile(first, 50),
            "max": percentile(first, 100),
        },
        late=sum(
            1
            for t in traces
            if t.attached is None
            or t.attached > args.fanout_delay
            or (t.first_delta is not None and t.first_text != first_word)
        ),
        attached_ms={
            "p50": percentile(attached, 50),
            "max": percentile(attached, 100),
        },
        errors=dict(failures),
    )


def median(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


async def fanout(
    base_url: str, args: argparse.Namespace, database: str, pids: Mapping[str, int]
) -> FanoutSummary:
    """Warm up, then alternate runs with no watcher and with `--watchers`, `--repeats` times."""
    print(f"{database}: fan-out, {args.repeats} x (0, {args.watchers}) watchers", file=sys.stderr)
    for warm in (0, min(10, args.watchers)):
        case = await fanout_case(base_url, warm, args, pids)
        if case.errors:
            raise BenchError(f"warm-up fan-out run ({warm} watchers) failed: {case.errors}")
    cases: list[FanoutCase] = []
    for _ in range(args.repeats):
        for watchers in (0, args.watchers):
            await anyio.sleep(0.5)  # let the service settle
            cases.append(await fanout_case(base_url, watchers, args, pids))
    zero = [case for case in cases if case.watchers == 0]
    many = [case for case in cases if case.watchers == args.watchers]
    cpu_0 = median([case.cpu_ms.get("service") for case in zero])
    cpu_n = median([case.cpu_ms.get("service") for case in many])
    events = median([float(case.events_delivered) for case in many])
    extra = cpu_n - cpu_0 if cpu_0 is not None and cpu_n is not None else None
    return FanoutSummary(
        database=database,
        watchers=args.watchers,
        words=args.words,
        chunk_delay=args.chunk_delay,
        delay=args.fanout_delay,
        run_s_0=median([case.run_s for case in zero]),
        run_s_n=median([case.run_s for case in many]),
        svc_cpu_ms_0=cpu_0,
        svc_cpu_ms_n=cpu_n,
        svc_cpu_ms_per_watcher=extra / args.watchers if extra is not None else None,
        svc_cpu_us_per_event=extra * 1000 / events if extra is not None and events else None,
        cases=cases,
    )


async def drive(
    base_url: str, args: argparse.Namespace, database: str, pids: Mapping[str, int]
) -> tuple[Latency, Counter[str], FanoutSummary]:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:
        figures, failures = await latency(client, args, database, pids)
    return figures, failures, await fanout(base_url, args, database, pids)


# --- the benchmark --------------------------------------------------------------------------


@dataclass
class Report:
    load_before: tuple[float, float, float]  # the 1, 5 and 15 min load averages at the start
    latency: list[Latency] = field(default_factory=list)
    fanout: list[FanoutSummary] = field(default_factory=list)
    failures: dict[str, dict[str, int]] = field(default_factory=dict)
    logs: dict[str, LogSummary] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # processes that died meanwhile


def bench_database(
    database: Database,
    args: argparse.Namespace,
    *,
    command: str,
    workdir: Path,
    fake_url: str,
    fake_pid: int,
    report: Report,
) -> None:
    """Start the service on `database`, measure both workloads, stop everything it started."""
    log = workdir / f"serve-{database}.log"
    pids = {"fake": fake_pid}
    with Resources() as stack:
        if database == "sqlite":
            url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        else:
            print("postgres: starting PostgreSQL and migrating", file=sys.stderr)
            url, postmaster = postgres(stack)
            if postmaster is not None:
                pids["postgres"] = postmaster
            migrate(command, url, workdir)
        port = free_port()
        env = child_env(
            DATABASE_URL=url,
            OPENAI_BASE_URL=fake_url,
            OPENAI_API_KEY="unused",
            DEFAULT_MODEL=MODEL,
            AGENTS_MODULE="app.examples.agents",
            CONCURRENCY=str(args.server_concurrency),
            LOG_LEVEL="warning",
            LOG_FORMAT="json",
        )
        args_ = [command, "serve", "--host", "127.0.0.1", "--port", str(port)]
        serve = stack.enter_context(running("agent-runs serve", args_, env, workdir, log))
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{base_url}/readyz", serve, "agent-runs serve")
        pids["service"] = serve.pid
        print(f"{database}: service ready, measuring saturation", file=sys.stderr)
        figures, failures, fanned = anyio.run(drive, base_url, args, database, pids)
        if serve.poll() is not None:
            report.notes.append(f"{database}: the service exited ({serve.returncode})")
    report.logs[database] = summarize_log(log)
    report.latency.append(figures)
    report.fanout.append(fanned)
    if failures:
        report.failures[f"{database} latency"] = dict(failures)
    for index, case in enumerate(fanned.cases):
        if case.errors:
            report.failures[f"{database} fan-out #{index + 1} ({case.watchers} watchers)"] = (
                case.errors
            )
        if not case.same_stored:
            report.notes.append(
                f"{database}: fan-out #{index + 1}: watchers did not all receive the stored events"
            )
        if case.late:
            report.notes.append(
                f"{database}: fan-out #{index + 1}: {case.late} watchers were not watching when "
                "the model started: raise --fanout-delay"
            )


def bench(args: argparse.Namespace) -> Report:
    load_before = os.getloadavg()  # anything else busy on the machine skews every figure
    command = agent_runs_command()
    databases: tuple[Database, ...] = DATABASES if args.db == "both" else (args.db,)
    report = Report(load_before)
    with Resources() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-runs-bench.")))
        scripts = workdir / "fake_model.json"
        scripts.write_text(json.dumps(script(args), indent=2))
        fake_port = free_port()
        fake_log = workdir / "fake-model.log"
        fake_args = [command, "fake-model", "--scripts", str(scripts), "--port", str(fake_port)]
        fake = stack.enter_context(
            running("agent-runs fake-model", fake_args, child_env(), workdir, fake_log)
        )
        fake_url = f"http://127.0.0.1:{fake_port}/v1"
        wait_until_ready(f"{fake_url}/models", fake, "agent-runs fake-model")
        for database in databases:
            bench_database(
                database,
                args,
                command=command,
                workdir=workdir,
                fake_url=fake_url,
                fake_pid=fake.pid,
                report=report,
            )
            if fake.poll() is not None:
                report.notes.append(f"the fake model exited ({fake.returncode}):\n{tail(fake_log)}")
                break
    return report


# --- output ---------------------------------------------------------------------------------


def number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def pair(values: Mapping[str, float | None], *keys: str, digits: int = 1) -> str:
    return "/".join(number(values.get(key), digits) for key in keys)


def render(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def latency_table(report: Report) -> str:
    header = (
        "database",
        "sat runs/s",
        "paced/s",
        "runs",
        "err",
        "late",
        "started>delta",
        "POST ms",
        "started ms",
        "delta raw ms",
        "delta net ms",
        "completed ms",
        "svc cpu ms/run sat/paced",
        "cpu busy",
    )
    rows = [
        (
            r.database,
            number(r.saturation_runs_per_s),
            number(r.achieved_runs_per_s),
            str(r.runs),
            str(r.errors),
            str(r.late),
            str(r.started_after_delta),
            pair(r.post_ms, "p50", "p99"),
            pair(r.started_ms, "p50", "p99"),
            pair(r.delta_raw_ms, "p50", "p99"),
            pair(r.delta_net_ms, "p50", "p99"),
            pair(r.completed_ms, "p50", "p99"),
            f"{number(r.saturation_svc_cpu_ms_per_run)}/{number(r.cpu_ms_per_run.get('service'))}",
            "-" if r.cpu_busy is None else f"{r.cpu_busy:.0%}",
        )
        for r in report.latency
    ]
    return "\n".join(render(header, rows))


def fanout_table(report: Report) -> str:
    header = (
        "database",
        "watchers",
        "run s",
        "done s",
        "svc cpu ms",
        "fake",
        "pg",
        "drv",
        "stored",
        "same",
        "deltas min-max",
        "attach ms p50/max",
        "first delta ms min/p50/max",
        "late",
        "err",
    )
    rows = [
        (
            s.database,
            str(c.watchers),
            number(c.run_s, 2),
            number(c.done_s, 2),
            number(c.cpu_ms.get("service"), 0),
            number(c.cpu_ms.get("fake"), 0),
            number(c.cpu_ms.get("postgres"), 0),
            number(c.cpu_ms.get("driver"), 0),
            str(c.stored_events),
            ("yes" if c.same_stored else "NO") if c.watchers else "-",
            f"{c.deltas_min}-{c.deltas_max}" if c.watchers else "-",
            pair(c.attached_ms, "p50", "max", digits=0) if c.watchers else "-",
            pair(c.first_delta_ms, "min", "p50", "max") if c.watchers else "-",
            str(c.late),
            str(sum(c.errors.values())),
        )
        for s in report.fanout
        for c in s.cases
    ]
    lines = render(header, rows)
    for s in report.fanout:
        lines.append(
            f"{s.database}: medians, run s {number(s.run_s_0, 2)} with 0 watchers, "
            f"{number(s.run_s_n, 2)} with {s.watchers}; service CPU "
            f"{number(s.svc_cpu_ms_0, 0)} -> {number(s.svc_cpu_ms_n, 0)} ms: "
            f"{number(s.svc_cpu_ms_per_watcher, 2)} ms per watcher, "
            f"{number(s.svc_cpu_us_per_event, 1)} us per event delivered"
        )
    return "\n".join(lines)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "databases": list(DATABASES) if args.db == "both" else [args.db],
        "runs": args.runs,
        "saturation_runs": args.saturation_runs,
        "concurrency": args.concurrency,
        "server_concurrency": args.server_concurrency,
        "delay": args.delay,
        "watchers": args.watchers,
        "words": args.words,
        "chunk_delay": args.chunk_delay,
        "fanout_delay": args.fanout_delay,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "revision": git_revision(),
    }


def print_report(report: Report, args: argparse.Namespace) -> None:
    env = environment(args)
    print(
        f"python {env['python']}, {env['cpus']} CPUs shared by service, fake, database and "
        f"driver; revision {env['revision'] or 'unknown'}"
    )
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*report.load_before))
    print()
    print(
        f"1. first-delta latency: saturation with {args.concurrency} in flight "
        f"(POST /runs?wait={WAIT_SECONDS}, {args.saturation_runs} one-turn runs), then "
        f"{args.runs} watched runs open loop at half of it;\n   the fake waits "
        f"{args.delay * 1000:g} ms before answering them (ms columns: p50/p99 from POST sent)"
    )
    print(latency_table(report))
    for r in report.latency:
        print(
            f"{r.database}: schedule {r.paced_runs_per_s:.1f} runs/s, worst start lag "
            f"{r.max_start_lag_ms:.1f} ms; delta net = delta raw - {r.delay_ms:g} ms"
        )
    print()
    print(
        f"2. fan-out: a {args.words}-word answer, {args.chunk_delay * 1000:g} ms between words, "
        f"after {args.fanout_delay:g} s; 0 or {args.watchers} watchers, "
        f"{args.repeats} times each (cpu columns: ms; first delta: after POST, minus the wait)"
    )
    print(fanout_table(report))
    for database, summary in report.logs.items():
        if summary.lines == 0:
            print(f"\n{database}: the service logged nothing at warning level or above")
            continue
        print(f"\n{database}: the service logged {summary.lines} lines: {dict(summary.levels)}")
        for event, count in summary.events.most_common(10):
            print(f"  {count:5d}  {event}")
        for example in summary.examples[:3]:
            print(f"  e.g. {example}")
    for note in report.notes:
        print(f"\n{note}")
    for name, reasons in report.failures.items():
        print(f"\n{name}: failures")
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1])[:10]:
            print(f"  {count:5d}  {reason}")


def write_json(path: Path, report: Report, args: argparse.Namespace) -> None:
    document = {
        "config": {**environment(args), "load_before": list(report.load_before)},
        "latency": [asdict(figures) for figures in report.latency],
        "fanout": [asdict(summary) for summary in report.fanout],
        "failures": report.failures,
        "notes": report.notes,
        "server_logs": {
            database: {"lines": s.lines, "levels": dict(s.levels), "events": dict(s.events)}
            for database, s in report.logs.items()
        },
    }
    path.write_text(json.dumps(document, indent=2, allow_nan=False, default=str) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    def at_least(minimum: float, kind: Callable[[str], Any] = int) -> Callable[[str], Any]:
        def parse(value: str) -> Any:
            number = kind(value)
            if number < minimum:
                raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
            return number

        return parse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--db", choices=[*DATABASES, "both"], default="both", help="database(s) (default both)")
    add("--runs", type=at_least(2), default=200, help="watched runs, paced (default 200)")
    add("--json", type=Path, metavar="PATH", help="also write the figures here")
    add(
        "--saturation-runs",
        type=at_least(1),
        default=300,
        help="closed-loop runs that measure saturation (default 300)",
    )
    add(
        "--concurrency",
        type=at_least(1),
        default=16,
        help="runs in flight while measuring saturation (default 16)",
    )
    add(
        "--delay",
        type=at_least(0, float),
        default=0.05,
        help="seconds the fake waits before answering a watched run (default 0.05)",
    )
    add("--watchers", type=at_least(1), default=100, help="streams on the long run (default 100)")
    add("--words", type=at_least(1), default=2000, help="words of the long answer (default 2000)")
    add(
        "--chunk-delay",
        type=at_least(0, float),
        default=0.001,
        help="seconds between the long answer's words (default 0.001)",
    )
    add(
        "--fanout-delay",
        type=at_least(0, float),
        default=3.0,
        help="seconds the fake waits before the long answer, for watchers to attach (default 3)",
    )
    add("--repeats", type=at_least(1), default=3, help="fan-out runs per case (default 3)")
    add(
        "--server-concurrency",
        type=at_least(1),
        default=32,
        help="the service's CONCURRENCY: runs its executor drives at once (default 32)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    # SIGTERM unwinds like Ctrl-C (inside the event loop too), so `finally` stops every process.
    # A shell starting this in the background ignores SIGINT in it: SIGINT must be live for that.
    def interrupt(signum: int, frame: FrameType | None) -> None:
        signal.raise_signal(signal.SIGINT)

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        report = bench(args)
    except BenchError as exc:
        print(f"bench/events.py: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every process this benchmark started was stopped", file=sys.stderr)
        return 130
    print_report(report, args)
    if args.json is not None:
        write_json(args.json, report, args)
    return 1 if report.failures or report.notes else 0


if __name__ == "__main__":
    sys.exit(main())
