"""Runs per second and latency of the agent-runs service over HTTP, on SQLite and PostgreSQL.

What it measures
----------------
Everything runs as separate processes, as in production:

- the fake model: `agent-runs fake-model` serving a script written to a temp dir, with no delay.
  `one-turn please` gets a text answer; `three-turn please` gets a call to the tool `add`,
  another call to `add`, then a text answer.
- the service: `agent-runs serve` (API and embedded executor) on a free 127.0.0.1 port, with the
  bundled example agents (`triage`), OPENAI_BASE_URL pointing at the fake, LOG_LEVEL=warning and
  CONCURRENCY=32 (`--server-concurrency`). Its database is a fresh SQLite file in the temp dir, or
  a throwaway PostgreSQL started with `.ci/postgres.sh start` and migrated with
  `agent-runs migrate`.
- this driver: an `httpx.AsyncClient` keeping `--concurrency` runs in flight (16 by default).

First the fake alone is measured: bare `openai.AsyncOpenAI` streamed chat completions (the
one-turn reply, usage included) at the same concurrency. That is the ceiling: the model calls per
second one Python client gets from the fake on this box; the service, itself one Python process
calling the fake through the same SDK, cannot do better. The `fake cpu` and `drv cpu` columns
tell which side limits it (usually the client: the SDK costs more per call than the fake).

Then, for each database, each workload (one-turn, three-turn) gets `--warmup` runs that are not
counted, then `--runs` measured runs. One run is `POST /runs?wait=30` with
`{"agent": "triage", "input": "one-turn please"}` (or three-turn), timed from sending the request
to receiving the response, which must carry the run `completed`, with the scripted answer, 1 or 3
steps and `usage.requests` 1 or 3. A run that fails any of that is counted as an error (and the
exit status is 1); it never counts as a fast run.

`runs/s` is measured runs over the wall time of the workload; `calls/s` is the model calls that
makes (runs/s x 1 or 3), and `of ceiling` compares it with the fake alone. p50 and p99 are
nearest-rank percentiles of the per-run latency, in milliseconds.

The CPU time each process used during a workload is read from /proc (Linux; the columns show `-`
elsewhere) and divided by the runs: `svc`, `fake`, `pg` (the postmaster and all its backends) and
`drv` (this driver), in ms per run. `cpu busy` is their sum over wall time x CPUs: the service is
one process with one event loop, so it saturates at one core, whatever the machine has.

No CPU pinning (`taskset`) is done: the service, the fake model, PostgreSQL and this driver all
share the machine's cores (2 on the reference machine), so the figures are those of the whole
system on one box, not of the service alone. In particular the ceiling is measured while the
service sits idle, and the service is measured while the fake and the driver use CPU too. Any
other load on the machine skews everything: the load average at the start is printed.

Every process it starts (service, fake model, PostgreSQL) is stopped in `finally` with bounded
waits, on success, failure, Ctrl-C or SIGTERM. The service's log (warnings and errors only) is
scanned after each database, and a summary is printed.

Run it
------
    uv run python bench/service.py                     # 300 runs per workload, both databases
    uv run python bench/service.py --db sqlite --runs 1000 --concurrency 32
    uv run python bench/service.py --json figures.json

PostgreSQL needs its server binaries (`pg_config --bindir`); as root they run as `postgres`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import anyio
import httpx
import openai
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

MODEL = "bench-model"
AGENT = "triage"
WAIT_SECONDS = 30
REQUEST_TIMEOUT_SECONDS = WAIT_SECONDS + 30
CEILING_CALLS_PER_RUN = 3  # the ceiling makes runs x 3 calls, the three-turn workload's count
CEILING_WARMUP_CALLS = 50
CPUS = os.cpu_count() or 1

Database = Literal["sqlite", "postgres"]
DATABASES: tuple[Database, ...] = ("sqlite", "postgres")


class RunFailed(Exception):
    """One measured run did not end as scripted."""


@dataclass(frozen=True)
class Workload:
    name: str
    prompt: str
    turns: int  # model calls, and steps, per run
    answer: str


ONE_TURN = Workload("one-turn", "one-turn please", 1, "Done in one turn.")
THREE_TURN = Workload("three-turn", "three-turn please", 3, "2 + 3 = 5, twice.")
WORKLOADS = (ONE_TURN, THREE_TURN)
ADD_ARGUMENTS = {"a": 2, "b": 3}
ADD_OUTPUT = "5"

SCRIPT: dict[str, Any] = {
    MODEL: {
        "rules": [
            {
                "match": "three-turn",
                "replies": [
                    {"tool_calls": [{"name": "add", "arguments": ADD_ARGUMENTS}]},
                    {"tool_calls": [{"name": "add", "arguments": ADD_ARGUMENTS}]},
                    {"content": THREE_TURN.answer},
                ],
            },
            {"match": "one-turn", "replies": [{"content": ONE_TURN.answer}]},
        ]
    }
}


# --- figures --------------------------------------------------------------------------------


@dataclass
class Timing:
    """What one batch of runs (or calls) gave."""

    seconds: float
    latencies: list[float]  # seconds, of the successful ones
    failures: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds used, by process

    @property
    def busy(self) -> float | None:
        """The share of all the machine's CPU time that the watched processes used."""
        if not self.cpu or self.seconds <= 0:
            return None
        return sum(self.cpu.values()) / (self.seconds * CPUS)

    def cpu_ms_per(self, count: int) -> dict[str, float]:
        return {name: seconds * 1000 / count for name, seconds in self.cpu.items()} if count else {}


@dataclass(frozen=True)
class Figures:
    database: str
    workload: str
    runs: int
    errors: int
    seconds: float
    runs_per_s: float
    calls_per_s: float
    p50_ms: float | None  # None: no run succeeded
    p99_ms: float | None
    max_ms: float | None
    of_ceiling: float | None  # calls/s over the fake's own calls/s
    cpu_ms_per_run: dict[str, float]  # service, fake, postgres, driver
    cpu_busy: float | None  # their CPU time over wall time x CPUs


@dataclass(frozen=True)
class Ceiling:
    calls: int
    errors: int
    seconds: float
    calls_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    cpu_ms_per_call: dict[str, float]  # fake, driver
    cpu_busy: float | None


def percentile_ms(seconds: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile, in milliseconds; None for no values."""
    if not seconds:
        return None
    ordered = sorted(seconds)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] * 1000


def figures(database: str, workload: Workload, timing: Timing, ceiling: float) -> Figures:
    runs = len(timing.latencies)
    runs_per_s = runs / timing.seconds if timing.seconds > 0 else 0.0
    calls_per_s = runs_per_s * workload.turns
    return Figures(
        database=database,
        workload=workload.name,
        runs=runs,
        errors=sum(timing.failures.values()),
        seconds=timing.seconds,
        runs_per_s=runs_per_s,
        calls_per_s=calls_per_s,
        p50_ms=percentile_ms(timing.latencies, 50),
        p99_ms=percentile_ms(timing.latencies, 99),
        max_ms=percentile_ms(timing.latencies, 100),
        of_ceiling=calls_per_s / ceiling if ceiling > 0 else None,
        cpu_ms_per_run=timing.cpu_ms_per(runs),
        cpu_busy=timing.busy,
    )


async def measure(
    once: Callable[[], Awaitable[float]],
    count: int,
    concurrency: int,
    pids: Mapping[str, int] | None = None,
) -> Timing:
    """Call `once` `count` times with at most `concurrency` in flight; `once` returns its own
    latency in seconds, or raises (counted as a failure, by reason). The CPU time used meanwhile
    by the processes of `pids` and by this driver is noted."""
    timing = Timing(0.0, [])
    cpu_before = cpu_snapshot(pids or {})
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            try:
                timing.latencies.append(await once())
            except (RunFailed, httpx.HTTPError, openai.OpenAIError, ValueError, KeyError) as exc:
                timing.failures[f"{type(exc).__name__}: {exc}"[:300]] += 1

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(min(concurrency, count)):
            group.start_soon(worker)
    timing.seconds = time.perf_counter() - started
    cpu_after = cpu_snapshot(pids or {})
    timing.cpu = {
        name: cpu_after[name] - cpu_before[name] for name in cpu_before.keys() & cpu_after
    }
    return timing


# --- the fake alone -------------------------------------------------------------------------


async def fake_ceiling(base_url: str, *, calls: int, concurrency: int, fake_pid: int) -> Ceiling:
    """Bare streamed chat completions against the fake: the most the service could get."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)

    async def once() -> float:
        started = time.perf_counter()
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": ONE_TURN.prompt}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text: list[str] = []
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    text.append(chunk.choices[0].delta.content)
        elapsed = time.perf_counter() - started
        if "".join(text) != ONE_TURN.answer:
            raise RunFailed(f"the fake answered {''.join(text)!r}")
        return elapsed

    try:
        await measure(once, CEILING_WARMUP_CALLS, concurrency)
        timing = await measure(once, calls, concurrency, {"fake": fake_pid})
    finally:
        await client.close()
    done = len(timing.latencies)
    return Ceiling(
        calls=done,
        errors=sum(timing.failures.values()),
        seconds=timing.seconds,
        calls_per_s=done / timing.seconds if timing.seconds > 0 else 0.0,
        p50_ms=percentile_ms(timing.latencies, 50),
        p99_ms=percentile_ms(timing.latencies, 99),
        cpu_ms_per_call=timing.cpu_ms_per(done),
        cpu_busy=timing.busy,
    )


# --- the service ----------------------------------------------------------------------------


def check_run(run: dict[str, Any], workload: Workload) -> None:
    """Raise `RunFailed` unless the run ended as the script says."""
    if run.get("status") != "completed":
        raise RunFailed(f"status {run.get('status')!r} (error {run.get('error')})")
    if run.get("final_output") != workload.answer:
        raise RunFailed(f"final_output {run.get('final_output')!r}")
    steps = run.get("steps") or []
    requests = (run.get("usage") or {}).get("requests")
    if len(steps) != workload.turns or requests != workload.turns:
        raise RunFailed(f"{len(steps)} steps, usage.requests {requests}, not {workload.turns}")
    calls = [call for step in steps for call in step["tool_calls"]]
    if len(calls) != workload.turns - 1 or any(
        call["name"] != "add" or call["status"] != "completed" or call["output"] != ADD_OUTPUT
        for call in calls
    ):
        raise RunFailed(f"tool calls {calls}")


async def one_run(client: httpx.AsyncClient, workload: Workload) -> float:
    """One run through the API; its latency from sending the POST to the completed answer."""
    started = time.perf_counter()
    response = await client.post(
        "/runs", params={"wait": WAIT_SECONDS}, json={"agent": AGENT, "input": workload.prompt}
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        raise RunFailed(f"POST /runs answered {response.status_code}: {response.text[:200]}")
    check_run(response.json(), workload)
    return elapsed


async def drive(
    base_url: str, *, runs: int, warmup: int, concurrency: int, pids: Mapping[str, int]
) -> dict[Workload, Timing]:
    """Warm both workloads up, then measure each in turn, with the CPU time of `pids`."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:
        for workload in WORKLOADS:
            warm = await measure(partial(one_run, client, workload), warmup, concurrency)
            if warm.failures:
                raise BenchError(f"warm-up of {workload.name} failed: {dict(warm.failures)}")
        return {
            workload: await measure(partial(one_run, client, workload), runs, concurrency, pids)
            for workload in WORKLOADS
        }


# --- the benchmark --------------------------------------------------------------------------


@dataclass
class Report:
    ceiling: Ceiling
    load_before: tuple[float, float, float]  # the 1, 5 and 15 min load averages at the start
    results: list[Figures] = field(default_factory=list)
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
    """Start the service on `database`, drive both workloads, stop everything it started."""
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
        print(f"{database}: service ready, driving runs", file=sys.stderr)
        timings = anyio.run(
            lambda: drive(
                base_url,
                runs=args.runs,
                warmup=args.warmup,
                concurrency=args.concurrency,
                pids=pids,
            )
        )
        if serve.poll() is not None:
            report.notes.append(
                f"{database}: the service exited ({serve.returncode}) during the runs"
            )
    report.logs[database] = summarize_log(log)
    for workload, timing in timings.items():
        report.results.append(figures(database, workload, timing, report.ceiling.calls_per_s))
        if timing.failures:
            report.failures[f"{database} {workload.name}"] = dict(timing.failures)


def bench(args: argparse.Namespace) -> Report:
    load_before = os.getloadavg()  # anything else busy on the machine skews every figure
    command = agent_runs_command()
    databases: tuple[Database, ...] = DATABASES if args.db == "both" else (args.db,)
    with Resources() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-runs-bench.")))
        scripts = workdir / "fake_model.json"
        scripts.write_text(json.dumps(SCRIPT, indent=2))
        fake_port = free_port()
        fake_log = workdir / "fake-model.log"
        fake_args = [command, "fake-model", "--scripts", str(scripts), "--port", str(fake_port)]
        fake_env = child_env(LOG_LEVEL="warning")
        fake = stack.enter_context(
            running("agent-runs fake-model", fake_args, fake_env, workdir, fake_log)
        )
        fake_url = f"http://127.0.0.1:{fake_port}/v1"
        wait_until_ready(f"{fake_url}/models", fake, "agent-runs fake-model")
        print("fake model ready, measuring it alone", file=sys.stderr)
        ceiling = anyio.run(
            lambda: fake_ceiling(
                fake_url,
                calls=args.runs * CEILING_CALLS_PER_RUN,
                concurrency=args.concurrency,
                fake_pid=fake.pid,
            )
        )
        if ceiling.errors:
            raise BenchError(f"{ceiling.errors} of the fake's calls failed")
        report = Report(ceiling, load_before)
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


def table(report: Report) -> str:
    header = (
        "database",
        "workload",
        "runs",
        "errors",
        "runs/s",
        "calls/s",
        "of ceiling",
        "p50 ms",
        "p99 ms",
        "max ms",
        "svc cpu",
        "fake cpu",
        "pg cpu",
        "drv cpu",
        "cpu busy",
    )

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    def cpu(figures: dict[str, float], name: str) -> str:
        return number(figures.get(name))

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    c = report.ceiling
    rows = [
        (
            "fake alone",
            "bare openai",
            str(c.calls),
            str(c.errors),
            "-",
            f"{c.calls_per_s:.1f}",
            "100%",
            number(c.p50_ms),
            number(c.p99_ms),
            "-",
            "-",
            cpu(c.cpu_ms_per_call, "fake"),
            "-",
            cpu(c.cpu_ms_per_call, "driver"),
            share(c.cpu_busy),
        )
    ]
    rows += [
        (
            r.database,
            r.workload,
            str(r.runs),
            str(r.errors),
            f"{r.runs_per_s:.1f}",
            f"{r.calls_per_s:.1f}",
            share(r.of_ceiling),
            number(r.p50_ms),
            number(r.p99_ms),
            number(r.max_ms),
            cpu(r.cpu_ms_per_run, "service"),
            cpu(r.cpu_ms_per_run, "fake"),
            cpu(r.cpu_ms_per_run, "postgres"),
            cpu(r.cpu_ms_per_run, "driver"),
            share(r.cpu_busy),
        )
        for r in report.results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        left = [cell.ljust(width) for cell, width in zip(cells[:2], widths[:2], strict=True)]
        right = [cell.rjust(width) for cell, width in zip(cells[2:], widths[2:], strict=True)]
        return "  ".join(left + right).rstrip()

    legend = (
        "calls/s: model calls (runs/s x 1 or 3); of ceiling: over the fake alone's calls/s;\n"
        "svc/fake/pg/drv cpu: CPU ms per run (per call for the fake alone) of the service, the\n"
        "fake, PostgreSQL (all its processes) and this driver; cpu busy: all of that CPU time\n"
        f"over wall time x {CPUS} CPUs (one process runs on one core at most)"
    )
    lines = [line(header), line(["-" * w for w in widths]), *map(line, rows)]
    return "\n".join([*lines, "", legend])


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "runs": args.runs,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "server_concurrency": args.server_concurrency,
        "databases": list(DATABASES) if args.db == "both" else [args.db],
        "wait_seconds": WAIT_SECONDS,
        "ceiling_calls": args.runs * CEILING_CALLS_PER_RUN,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "revision": git_revision(),
    }


def print_report(report: Report, args: argparse.Namespace) -> None:
    env = environment(args)
    print(
        f"{args.runs} runs per workload ({args.warmup} warm-up), {args.concurrency} in flight; "
        f"service CONCURRENCY={args.server_concurrency}; POST /runs?wait={WAIT_SECONDS}"
    )
    print(
        f"python {env['python']}, {env['cpus']} CPUs shared by service, fake, database and "
        f"driver; revision {env['revision'] or 'unknown'}"
    )
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*report.load_before))
    print()
    print(table(report))
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
        print(f"\n{name}: failed runs")
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1])[:10]:
            print(f"  {count:5d}  {reason}")


def write_json(path: Path, report: Report, args: argparse.Namespace) -> None:
    document = {
        "config": {**environment(args), "load_before": list(report.load_before)},
        "ceiling": asdict(report.ceiling),
        "results": [asdict(result) for result in report.results],
        "failures": report.failures,
        "notes": report.notes,
        "server_logs": {
            database: {"lines": s.lines, "levels": dict(s.levels), "events": dict(s.events)}
            for database, s in report.logs.items()
        },
    }
    path.write_text(json.dumps(document, indent=2, allow_nan=False, default=str) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    def at_least(minimum: int) -> Callable[[str], int]:
        def parse(value: str) -> int:
            number = int(value)
            if number < minimum:
                raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
            return number

        return parse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--runs", type=at_least(1), default=300, help="measured runs per workload (default 300)"
    )
    parser.add_argument(
        "--concurrency", type=at_least(1), default=16, help="runs in flight at once (default 16)"
    )
    parser.add_argument(
        "--db", choices=[*DATABASES, "both"], default="both", help="database(s) (default both)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument(
        "--warmup",
        type=at_least(0),
        default=20,
        help="uncounted runs first, per workload and database (default 20)",
    )
    parser.add_argument(
        "--server-concurrency",
        type=at_least(1),
        default=32,
        help="the service's CONCURRENCY: runs its executor drives at once (default 32)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    # SIGTERM unwinds like Ctrl-C (inside the event loop too), so `finally` stops every process.
    def interrupt(signum: int, frame: FrameType | None) -> None:
        signal.raise_signal(signal.SIGINT)

    # A shell that starts this in the background ignores SIGINT: SIGTERM would then do nothing.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        report = bench(args)
    except BenchError as exc:
        print(f"bench/service.py: {exc}", file=sys.stderr)
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
