"""Scale-out and takeover of the agent-runs service: API process + 1, 2, 4 workers on PostgreSQL.

What it measures
----------------
Everything runs as separate processes, as in production (see README, "Running in production"):

- a throwaway PostgreSQL (`.ci/postgres.sh start`, fsync off, max_connections 200), migrated
  once with `agent-runs migrate`;
- the fake model: `agent-runs fake-model` serving a script written to a temp dir;
- one API process: `agent-runs serve --no-executor` (LOG_LEVEL=warning), kept for the whole
  benchmark;
- `agent-runs worker` processes, started fresh for each measurement, with the bundled example
  agents (`triage`, whose `add` tool is `read`), OPENAI_BASE_URL pointing at the fake and
  LOG_LEVEL=info (a worker is ready once its log says `executor.started` and `channel.connected`;
  the info lines are also how a worker's name, its runs' `claimed_by`, is known);
- this driver: one process, `httpx.AsyncClient` for the API and `asyncpg` to read `runs` directly.

1. Throughput and latency with 1, 2 and 4 workers (`--workers`). The total executor capacity is
   kept constant: each worker gets CONCURRENCY = `--capacity` (64) / workers, so 64, 32, 16; with
   `--concurrency` (32) runs in flight their slots are never the limit (the CPU is). Leases are
   the defaults (LEASE_SECONDS=20, HEARTBEAT_SECONDS=5). For each worker count, two workloads:
   `one-turn` (one model call, a text answer) and `two-turn` (a call to the tool `add`, then the
   answer), each with `--warmup` uncounted runs then `--runs` measured ones, closed loop:
   `POST /runs?wait=30`, timed from sending it to the answer, which must carry the run
   `completed` with the scripted answer, 1 or 2 steps and usage (otherwise the run is an error and
   the exit status is 1). `runs/s` is the measured runs over the workload's wall time; p50/p99/max
   are nearest-rank latencies in ms. CPU ms per run, read from /proc: `api`, `workers` (the sum
   over the workers), `pg` (the postmaster and all its backends), `fake`, `drv` (this driver);
   `busy` is all of it over wall time x CPUs. `split` is the share of the runs each worker drove
   (its `run.rested` log lines, warm-up included). The fake answers at once, so this measures the
   service's own cost; latency includes the API's watch poll (WATCH_POLL_SECONDS=0.05), since a
   run's end is noticed by polling PostgreSQL when another process drove it.

2. Takeover. Two workers with LEASE_SECONDS=`--lease` (5), HEARTBEAT_SECONDS=`--heartbeat` (1),
   POLL_INTERVAL_SECONDS=1 and CONCURRENCY=64 each (more than the runs, so either worker can take
   all of them at once; SHUTDOWN_GRACE_SECONDS is the default 10). `--failover-runs` (40) runs of a
   slow two-turn workload are posted (no wait): the fake answers the `add` call, and then the
   text, each after `--model-delay` (2 s). Once every run is claimed and started (`started_at`
   set; its first model call follows at once), and 0.2 s more, the worker holding the most runs
   is signalled, its runs early in their first turn:
   - `SIGKILL` (kill -9): its runs are orphaned. Another worker takes each over once its lease
     expires (LEASE_SECONDS after its last renewal, so 4-5 s after the kill) at its next claim
     (within POLL_INTERVAL_SECONDS), then makes the first model call again and the second: done
     about lease + poll + 2 x model delay after the kill.
   - `SIGTERM` (graceful): the worker finishes the turn in flight (the rest of the first model
     call), hands its runs back (`queued`, with a notification) and exits 0; the other worker
     claims them at once and makes the second model call: done about 2 x model delay after the
     signal, with no lease in it.
   Meanwhile `runs` is read from PostgreSQL every 50 ms (`claimed_by`, `status`). Reported per
   trial (`--trials`, 3): `held`, the runs the signalled worker held at the signal, and `other`,
   the other worker's; `taken`, how many of `held` the other worker claimed later; `last taken s`,
   signal -> the last of them claimed by the other worker; `last done s`, signal -> the last of
   them at rest; `-lease`, either minus LEASE_SECONDS (SIGKILL only: `taken - lease` is the
   takeover overhead and should lie between -1 s, the heartbeat, and +1 s, the poll interval);
   `taken>done s`, min-max over `held` from claimed by the other worker to at rest (the model
   calls left: 2 x delay after a kill, 1 x after a hand-back); `all done s`, signal -> every run at
   rest; `exit s`, signal -> the signalled worker exited; `takeovers`, the highest
   `runs.takeovers` seen among `held` while polling (1 after a kill, 0 after a hand-back; it may
   be reset once a later turn is stored, so it is read while the runs go); `lost` (not at rest
   `--lease` + 4 x delay + 30 s after the signal) and `failed` (at rest but not `completed` with
   the scripted answer, checked through `GET /runs/{id}`), over all the runs. Timings have the
   50 ms granularity of the polling.

No CPU pinning: the API, the workers, the fake, PostgreSQL and this driver share the machine's
cores (2 on the reference machine), so more workers add no CPU, only processes; the load average
at the start is printed, and anything else running on the machine skews the figures. Warnings and
errors in the logs of the API and the workers are summarized at the end.

Every process it starts (PostgreSQL, the fake, the API, the workers) is stopped on exit with
bounded waits, on success, failure, Ctrl-C or SIGTERM.

Run it
------
    uv run python bench/scale.py                  # about 4-6 minutes
    uv run python bench/scale.py --quick          # about a minute and a half
    uv run python bench/scale.py --workers 1 2 --runs 1000 --json figures.json
    uv run python bench/scale.py --workers --trials 5 --logs /tmp/logs   # takeover only

PostgreSQL needs its server binaries (`pg_config --bindir`); as root they run as `postgres`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import asyncpg
import httpx
from harness import (
    BenchError,
    Resources,
    agent_runs_command,
    child_env,
    free_port,
    git_revision,
    migrate,
    postgres,
    running,
    tail,
    wait_until_ready,
)
from service import (
    ONE_TURN,
    RunFailed,
    Timing,
    Workload,
    check_run,
    measure,
    one_run,
    percentile_ms,
)

MODEL = "scale-model"
WAIT_SECONDS = 30
REQUEST_TIMEOUT_SECONDS = WAIT_SECONDS + 30
READY_TIMEOUT_SECONDS = 60.0
CPUS = os.cpu_count() or 1
RESTING = frozenset({"completed", "failed", "cancelled", "pending_approval"})
POLL_SECONDS = 0.05  # how often the takeover trials read `runs`
SETTLE_SECONDS = 0.2  # after every run started, before the signal: model calls in flight
FAILOVER_CONCURRENCY = 64  # per worker in the takeover trials: more than the runs
POLL_INTERVAL_SECONDS = 1.0  # the workers' (the default, set explicitly)
FAKE_BANNER = "fake model on "  # the one plain line `agent-runs fake-model` prints

TWO_TURN = Workload("two-turn", "two-turn please", 2, "2 + 3 = 5.")
SLOW = Workload("slow", "slow two-turn please", 2, "2 + 3 = 5, slowly.")
WORKLOADS = (ONE_TURN, TWO_TURN)
ADD = {"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]}


def script(model_delay: float) -> dict[str, Any]:
    """The fake's script; rules are tried in order, so `slow` comes before `two-turn`."""
    return {
        MODEL: {
            "rules": [
                {
                    "match": "slow",
                    "replies": [
                        {**ADD, "delay": model_delay},
                        {"content": SLOW.answer, "delay": model_delay},
                    ],
                },
                {"match": "two-turn", "replies": [ADD, {"content": TWO_TURN.answer}]},
                {"match": "one-turn", "replies": [{"content": ONE_TURN.answer}]},
            ]
        }
    }


# --- figures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    workers: int
    concurrency_each: int
    workload: str
    runs: int
    errors: int
    seconds: float
    runs_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    cpu_ms_per_run: dict[str, float]  # api, workers (sum), postgres, fake, driver
    cpu_busy: float | None
    split: list[float]  # share of the runs each worker drove (warm-up included)


@dataclass
class Takeover:
    signal: str
    trial: int
    runs: int
    held: int  # by the signalled worker at the signal
    other_held: int  # by the other worker at the signal
    taken: int = 0  # of `held`, later claimed by the other worker
    last_taken_s: float | None = None  # signal -> the last of `held` claimed by the other
    last_done_s: float | None = None  # signal -> the last of `held` at rest
    taken_to_done_s: tuple[float, float] | None = None  # min, max over `held` taken and done
    all_done_s: float | None = None  # signal -> every run at rest
    exit_s: float | None = None  # signal -> the signalled worker exited
    exit_code: int | None = None
    max_takeovers: int | None = None  # the most `runs.takeovers` seen among `held`
    lost: int = 0  # never at rest
    failed: int = 0  # at rest, not completed as scripted
    failures: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LogFinding:
    """Warning and error lines of one process's log."""

    name: str
    events: dict[str, int]
    examples: list[str]


@dataclass
class Report:
    load_before: tuple[float, float, float]
    throughput: list[Throughput] = field(default_factory=list)
    takeovers: list[Takeover] = field(default_factory=list)
    failures: dict[str, dict[str, int]] = field(default_factory=dict)
    logs: list[LogFinding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- logs -----------------------------------------------------------------------------------


def log_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a log; anything else comes back as an `unstructured` record."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    records: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            records.append({"level": "unstructured", "event": line[:200], "line": line})
    return records


def findings(name: str, path: Path) -> LogFinding | None:
    """The lines above info level (and any that are not JSON), or None if there are none."""
    events: Counter[str] = Counter()
    examples: list[str] = []
    for record in log_records(path):
        level = str(record.get("level", "?"))
        if level in ("debug", "info") or str(record.get("event")).startswith(FAKE_BANNER):
            continue
        events[f"{level}: {record.get('event', '?')}"] += 1
        if len(examples) < 3:
            examples.append(str(record.get("line") or json.dumps(record))[:600])
    return LogFinding(name, dict(events), examples) if events else None


def count_events(path: Path, event: str) -> int:
    return sum(1 for record in log_records(path) if record.get("event") == event)


# --- processes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Worker:
    process: subprocess.Popen[bytes]
    log: Path
    name: str  # the executor's name: `claimed_by` of the runs it holds


@dataclass(frozen=True)
class Setup:
    """What every measurement shares: the processes started once."""

    command: str
    workdir: Path
    db_url: str
    api_url: str
    fake_url: str
    pids: dict[str, int]  # api, fake, postgres


def wait_for_worker(process: subprocess.Popen[bytes], log: Path, label: str) -> str:
    """Wait until the worker's log says it claims and listens; its executor's name."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{label} exited with {process.returncode} before it was ready")
        records = log_records(log)
        started = [r for r in records if r.get("event") == "executor.started"]
        if started and any(r.get("event") == "channel.connected" for r in records):
            return str(started[0].get("worker"))
        time.sleep(0.05)
    raise BenchError(f"{label} was not ready within {READY_TIMEOUT_SECONDS:g} s")


def start_workers(
    stack: Resources, setup: Setup, count: int, tag: str, **settings: str
) -> list[Worker]:
    env = child_env(
        DATABASE_URL=setup.db_url,
        OPENAI_BASE_URL=setup.fake_url,
        OPENAI_API_KEY="unused",
        DEFAULT_MODEL=MODEL,
        AGENTS_MODULE="app.examples.agents",
        LOG_LEVEL="info",
        LOG_FORMAT="json",
        **settings,
    )
    started: list[tuple[subprocess.Popen[bytes], Path, str]] = []
    for index in range(1, count + 1):
        label = f"agent-runs worker {tag}-{index}"
        log = setup.workdir / f"worker-{tag}-{index}.log"
        args = [setup.command, "worker"]
        process = stack.enter_context(running(label, args, env, setup.workdir, log))
        started.append((process, log, label))
    return [
        Worker(process, log, wait_for_worker(process, log, label))
        for process, log, label in started
    ]


def check_workers(workers: Sequence[Worker], report: Report, what: str) -> None:
    for worker in workers:
        if worker.process.poll() is not None:
            report.notes.append(
                f"{what}: worker {worker.name} exited ({worker.process.returncode}) meanwhile:\n"
                f"{tail(worker.log)}"
            )


def note_logs(report: Report, logs: Mapping[str, Path]) -> None:
    for name, path in logs.items():
        found = findings(name, path)
        if found is not None:
            report.logs.append(found)


# --- 1. throughput --------------------------------------------------------------------------


async def drive(
    api_url: str, *, runs: int, warmup: int, concurrency: int, pids: Mapping[str, int]
) -> dict[Workload, Timing]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS)
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=timeout) as client:
        for workload in WORKLOADS:
            warm = await measure(partial(one_run, client, workload), warmup, concurrency)
            if warm.failures:
                raise BenchError(f"warm-up of {workload.name} failed: {dict(warm.failures)}")
        return {
            workload: await measure(partial(one_run, client, workload), runs, concurrency, pids)
            for workload in WORKLOADS
        }


def bench_throughput(count: int, args: argparse.Namespace, setup: Setup, report: Report) -> None:
    each = max(1, -(-args.capacity // count))  # ceil: the capacity is never below --capacity
    print(f"throughput: {count} worker(s), CONCURRENCY={each} each", file=sys.stderr)
    with Resources() as stack:
        workers = start_workers(stack, setup, count, f"w{count}", CONCURRENCY=str(each))
        pids = setup.pids | {f"worker{i}": w.process.pid for i, w in enumerate(workers, 1)}
        timings = anyio.run(
            lambda: drive(
                setup.api_url,
                runs=args.runs,
                warmup=args.warmup,
                concurrency=args.concurrency,
                pids=pids,
            )
        )
        check_workers(workers, report, f"{count} workers")
    rested = [count_events(w.log, "run.rested") for w in workers]
    split = [n / sum(rested) for n in rested] if sum(rested) else []
    note_logs(report, {f"worker {w.name} ({count} workers)": w.log for w in workers})
    for workload, timing in timings.items():
        done = len(timing.latencies)
        cpu = timing.cpu_ms_per(done)
        worker_cpu = [ms for name, ms in cpu.items() if name.startswith("worker")]
        per_run = {k: v for k, v in cpu.items() if not k.startswith("worker")}
        if len(worker_cpu) == count:
            per_run["workers"] = sum(worker_cpu)
        report.throughput.append(
            Throughput(
                workers=count,
                concurrency_each=each,
                workload=workload.name,
                runs=done,
                errors=sum(timing.failures.values()),
                seconds=timing.seconds,
                runs_per_s=done / timing.seconds if timing.seconds > 0 else 0.0,
                p50_ms=percentile_ms(timing.latencies, 50),
                p99_ms=percentile_ms(timing.latencies, 99),
                max_ms=percentile_ms(timing.latencies, 100),
                cpu_ms_per_run=per_run,
                cpu_busy=timing.busy,
                split=split,
            )
        )
        if timing.failures:
            report.failures[f"{count} workers {workload.name}"] = dict(timing.failures)


# --- 2. takeover ----------------------------------------------------------------------------


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def post_runs(client: httpx.AsyncClient, count: int) -> list[str]:
    ids: list[str] = []

    async def post() -> None:
        response = await client.post("/runs", json={"agent": "triage", "input": SLOW.prompt})
        if response.status_code != 201:
            raise BenchError(f"POST /runs answered {response.status_code}: {response.text[:200]}")
        ids.append(response.json()["id"])

    limiter = anyio.CapacityLimiter(16)

    async def limited() -> None:
        async with limiter:
            await post()

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(limited)
    return ids


@dataclass(frozen=True)
class Row:
    status: str
    claimed_by: str | None
    started: bool
    takeovers: int


async def read_runs(db: asyncpg.Connection, ids: Sequence[str]) -> dict[str, Row]:
    rows = await db.fetch(
        "SELECT id, status, claimed_by, started_at IS NOT NULL AS started, takeovers"
        " FROM runs WHERE id = ANY($1::text[])",
        list(ids),
    )
    return {
        row["id"]: Row(row["status"], row["claimed_by"], row["started"], row["takeovers"])
        for row in rows
    }


async def takeover_trial(
    setup: Setup,
    args: argparse.Namespace,
    workers: Sequence[Worker],
    signum: signal.Signals,
    trial: int,
) -> Takeover:
    timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS)
    db = await asyncpg.connect(asyncpg_dsn(setup.db_url))
    try:
        async with httpx.AsyncClient(base_url=setup.api_url, timeout=timeout) as client:
            ids = await post_runs(client, args.failover_runs)
            # Every run claimed and started (its first model call follows at once): then each
            # worker's runs are early in their first turn.
            names = {w.name for w in workers}
            with anyio.fail_after(30):
                while True:
                    rows = await read_runs(db, ids)
                    if len(rows) == len(ids) and all(
                        row.status == "running" and row.claimed_by in names and row.started
                        for row in rows.values()
                    ):
                        break
                    await anyio.sleep(POLL_SECONDS)
            await anyio.sleep(SETTLE_SECONDS)
            rows = await read_runs(db, ids)  # nothing moves before the signal, but be exact
            holders = Counter(row.claimed_by for row in rows.values())
            victim = max(workers, key=lambda w: holders[w.name])
            other = next(w for w in workers if w is not victim)
            held = {run_id for run_id, row in rows.items() if row.claimed_by == victim.name}
            signalled = time.perf_counter()
            victim.process.send_signal(signum)
            result = Takeover(
                signal=signum.name,
                trial=trial,
                runs=len(ids),
                held=len(held),
                other_held=holders[other.name],
            )
            taken: dict[str, float] = {}
            done: dict[str, float] = {}
            deadline = signalled + args.lease + 4 * args.model_delay + 30
            while time.perf_counter() < deadline:
                rows = await read_runs(db, ids)
                at = time.perf_counter() - signalled
                for run_id, row in rows.items():
                    if run_id in held:
                        most = max(row.takeovers, result.max_takeovers or 0)
                        result.max_takeovers = most
                        if row.claimed_by == other.name:
                            taken.setdefault(run_id, at)
                    if row.status in RESTING:
                        done.setdefault(run_id, at)
                if result.exit_s is None and victim.process.poll() is not None:
                    result.exit_s = at
                    result.exit_code = victim.process.returncode
                if len(done) == len(ids) and result.exit_s is not None:
                    break
                await anyio.sleep(POLL_SECONDS)
            result.taken = len(taken)
            result.last_taken_s = max(taken.values(), default=None)
            held_done = [done[run_id] for run_id in held if run_id in done]
            result.last_done_s = max(held_done) if len(held_done) == len(held) else None
            result.all_done_s = max(done.values()) if len(done) == len(ids) else None
            rest = [done[run_id] - at for run_id, at in taken.items() if run_id in done]
            result.taken_to_done_s = (min(rest), max(rest)) if rest else None
            result.lost = len(ids) - len(done)
            failures: Counter[str] = Counter()
            for run_id in done:
                response = await client.get(f"/runs/{run_id}")
                try:
                    if response.status_code != 200:
                        raise RunFailed(f"GET /runs/{{id}} answered {response.status_code}")
                    check_run(response.json(), SLOW)
                except RunFailed as exc:
                    failures[str(exc)[:300]] += 1
            result.failed = sum(failures.values())
            result.failures = dict(failures)
            return result
    finally:
        await db.close()


def bench_takeover(
    signum: signal.Signals, trial: int, args: argparse.Namespace, setup: Setup, report: Report
) -> None:
    print(f"takeover: {signum.name}, trial {trial}", file=sys.stderr)
    with Resources() as stack:
        workers = start_workers(
            stack,
            setup,
            2,
            f"{signum.name.lower()}{trial}",
            CONCURRENCY=str(FAILOVER_CONCURRENCY),
            LEASE_SECONDS=f"{args.lease:g}",
            HEARTBEAT_SECONDS=f"{args.heartbeat:g}",
            POLL_INTERVAL_SECONDS=f"{POLL_INTERVAL_SECONDS:g}",
        )
        result = anyio.run(lambda: takeover_trial(setup, args, workers, signum, trial))
    report.takeovers.append(result)
    label = f"{signum.name} trial {trial}"
    if result.failures or result.lost:
        report.failures[label] = result.failures | ({"lost": result.lost} if result.lost else {})
    if signum == signal.SIGTERM and result.exit_code not in (0, None):
        report.notes.append(f"{label}: the worker exited {result.exit_code} after SIGTERM")
    note_logs(report, {f"worker {w.name} ({label})": w.log for w in workers})


# --- the benchmark --------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> Report:
    report = Report(os.getloadavg())
    command = agent_runs_command()
    with Resources() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-runs-bench.")))
        scripts = workdir / "fake_model.json"
        scripts.write_text(json.dumps(script(args.model_delay), indent=2))
        fake_port = free_port()
        fake_args = [command, "fake-model", "--scripts", str(scripts), "--port", str(fake_port)]
        fake_log = workdir / "fake-model.log"
        fake_env = child_env(LOG_LEVEL="warning")
        fake = stack.enter_context(
            running("agent-runs fake-model", fake_args, fake_env, workdir, fake_log)
        )
        fake_url = f"http://127.0.0.1:{fake_port}/v1"
        print("starting PostgreSQL and migrating", file=sys.stderr)
        db_url, postmaster = postgres(stack)
        migrate(command, db_url, workdir)
        wait_until_ready(f"{fake_url}/models", fake, "agent-runs fake-model")
        api_port = free_port()
        api_env = child_env(
            DATABASE_URL=db_url,
            OPENAI_BASE_URL=fake_url,
            OPENAI_API_KEY="unused",
            DEFAULT_MODEL=MODEL,
            AGENTS_MODULE="app.examples.agents",
            LOG_LEVEL="warning",
            LOG_FORMAT="json",
        )
        api_args = [command, "serve", "--no-executor", "--host", "127.0.0.1"]
        api_log = workdir / "api.log"
        api = stack.enter_context(
            running(
                "agent-runs serve --no-executor",
                [*api_args, "--port", str(api_port)],
                api_env,
                workdir,
                api_log,
            )
        )
        api_url = f"http://127.0.0.1:{api_port}"
        wait_until_ready(f"{api_url}/readyz", api, "agent-runs serve --no-executor")
        pids = {"api": api.pid, "fake": fake.pid}
        if postmaster is not None:
            pids["postgres"] = postmaster
        setup = Setup(command, workdir, db_url, api_url, fake_url, pids)
        for count in args.workers:
            bench_throughput(count, args, setup, report)
        for trial in range(1, args.trials + 1):
            for signum in (signal.SIGKILL, signal.SIGTERM):
                bench_takeover(signum, trial, args, setup, report)
        for name, process, log in (("API", api, api_log), ("fake model", fake, fake_log)):
            if process.poll() is not None:
                report.notes.append(f"the {name} exited ({process.returncode}):\n{tail(log)}")
        note_logs(report, {"API": api_log, "fake model": fake_log})
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in workdir.glob("*.log"):
                shutil.copy(log, args.logs / log.name)
    return report


# --- output ---------------------------------------------------------------------------------


def number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(header: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> str:
    """Columns padded to their widest cell; the first `left` to the left, the rest right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def throughput_table(report: Report) -> str:
    header = (
        "workers",
        "conc",
        "workload",
        "runs",
        "errors",
        "runs/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "api",
        "workers",
        "pg",
        "fake",
        "drv",
        "busy",
        "split",
    )
    rows = [
        (
            str(r.workers),
            f"{r.workers}x{r.concurrency_each}",
            r.workload,
            str(r.runs),
            str(r.errors),
            number(r.runs_per_s),
            number(r.p50_ms),
            number(r.p99_ms),
            number(r.max_ms),
            number(r.cpu_ms_per_run.get("api")),
            number(r.cpu_ms_per_run.get("workers")),
            number(r.cpu_ms_per_run.get("postgres")),
            number(r.cpu_ms_per_run.get("fake")),
            number(r.cpu_ms_per_run.get("driver")),
            "-" if r.cpu_busy is None else f"{r.cpu_busy:.0%}",
            "/".join(f"{share:.0%}" for share in r.split) or "-",
        )
        for r in report.throughput
    ]
    return render(header, rows, 3)


def takeover_table(report: Report, lease: float) -> str:
    header = (
        "signal",
        "trial",
        "runs",
        "held",
        "other",
        "taken",
        "last taken s",
        "-lease",
        "last done s",
        "-lease",
        "taken>done s",
        "all done s",
        "exit s",
        "takeovers",
        "lost",
        "failed",
    )

    def minus_lease(r: Takeover, value: float | None) -> str:
        if r.signal != "SIGKILL" or value is None:
            return "-"
        return f"{value - lease:+.2f}"

    rows = [
        (
            r.signal,
            str(r.trial),
            str(r.runs),
            str(r.held),
            str(r.other_held),
            str(r.taken),
            number(r.last_taken_s, 2),
            minus_lease(r, r.last_taken_s),
            number(r.last_done_s, 2),
            minus_lease(r, r.last_done_s),
            "-" if r.taken_to_done_s is None else "{:.2f}-{:.2f}".format(*r.taken_to_done_s),
            number(r.all_done_s, 2),
            number(r.exit_s, 2),
            "-" if r.max_takeovers is None else str(r.max_takeovers),
            str(r.lost),
            str(r.failed),
        )
        for r in report.takeovers
    ]
    return render(header, rows, 2)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "workers": args.workers,
        "capacity": args.capacity,
        "runs": args.runs,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "wait_seconds": WAIT_SECONDS,
        "failover_runs": args.failover_runs,
        "failover_concurrency_each": FAILOVER_CONCURRENCY,
        "model_delay": args.model_delay,
        "lease_seconds": args.lease,
        "heartbeat_seconds": args.heartbeat,
        "poll_interval_seconds": POLL_INTERVAL_SECONDS,
        "trials": args.trials,
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "revision": git_revision(),
    }


def print_report(report: Report, args: argparse.Namespace) -> None:
    env = environment(args)
    if args.workers:
        print(
            f"1 API process (serve --no-executor) + {', '.join(map(str, args.workers))} workers, "
            f"total CONCURRENCY {args.capacity}; {args.runs} runs per workload ({args.warmup} "
            f"warm-up), {args.concurrency} in flight, POST /runs?wait={WAIT_SECONDS}"
        )
    print(
        f"python {env['python']}, {env['cpus']} CPUs shared by every process and this driver; "
        f"revision {env['revision'] or 'unknown'}"
    )
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*report.load_before))
    print()
    if report.throughput:
        print(throughput_table(report))
        print()
        print(
            "conc: workers x CONCURRENCY; api/workers/pg/fake/drv: CPU ms per run (workers: the\n"
            f"sum over them); busy: all that CPU over wall time x {CPUS} CPUs; split: runs per\n"
            "worker (warm-up included)"
        )
        print()
    print(
        f"takeover: 2 workers x CONCURRENCY {FAILOVER_CONCURRENCY}, LEASE_SECONDS={args.lease:g}, "
        f"HEARTBEAT_SECONDS={args.heartbeat:g}, POLL_INTERVAL_SECONDS={POLL_INTERVAL_SECONDS:g}; "
        f"{args.failover_runs} two-turn runs, each model reply after {args.model_delay:g} s"
    )
    print()
    print(takeover_table(report, args.lease))
    print()
    print(
        "held/other: runs the signalled/other worker held at the signal; taken: of those held,\n"
        "claimed later by the other worker; times in s after the signal (50 ms polling); -lease:\n"
        "minus LEASE_SECONDS (SIGKILL); taken>done: from taken by the other worker to at rest,\n"
        "min-max over those runs; exit: the signalled worker gone; takeovers: the highest\n"
        "runs.takeovers seen among those held; lost/failed: over all the runs"
    )
    for finding in report.logs:
        print(f"\n{finding.name} logged: {finding.events}")
        for example in finding.examples:
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
        "throughput": [asdict(r) for r in report.throughput],
        "takeovers": [asdict(r) for r in report.takeovers],
        "failures": report.failures,
        "logs": [asdict(finding) for finding in report.logs],
        "notes": report.notes,
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
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer runs and one trial (defaults 100 runs, 20 warm-up, 1 trial; ~1.5 min)",
    )
    parser.add_argument(
        "--workers",
        type=at_least(1),
        nargs="*",
        default=[1, 2, 4],
        help="worker counts to measure throughput with (default 1 2 4; none: takeover only)",
    )
    parser.add_argument(
        "--capacity",
        type=at_least(1),
        default=64,
        help="total CONCURRENCY, split over the workers (default 64)",
    )
    parser.add_argument(
        "--runs", type=at_least(1), help="measured runs per workload and worker count (600)"
    )
    parser.add_argument("--warmup", type=at_least(0), help="uncounted runs first (default 40)")
    parser.add_argument(
        "--concurrency", type=at_least(1), default=32, help="runs in flight (default 32)"
    )
    parser.add_argument(
        "--failover-runs", type=at_least(2), default=40, help="runs per takeover trial (40)"
    )
    parser.add_argument(
        "--model-delay",
        type=at_least(0.1, float),
        default=2.0,
        help="seconds before each slow model reply in the takeover trials (default 2)",
    )
    parser.add_argument(
        "--lease",
        type=at_least(1, float),
        default=5.0,
        help="LEASE_SECONDS of the takeover trials (default 5)",
    )
    parser.add_argument(
        "--heartbeat",
        type=at_least(0.1, float),
        default=1.0,
        help="HEARTBEAT_SECONDS of the takeover trials (default 1)",
    )
    parser.add_argument(
        "--trials", type=at_least(1), help="takeover trials per signal (default 3; --quick 1)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument(
        "--logs", type=Path, metavar="DIR", help="copy the processes' logs here at the end"
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 100 if args.quick else 600
    if args.warmup is None:
        args.warmup = 20 if args.quick else 40
    if args.trials is None:
        args.trials = 1 if args.quick else 3
    if args.heartbeat >= args.lease:
        parser.error("--heartbeat must be shorter than --lease")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    # SIGTERM unwinds like Ctrl-C (inside the event loop too), so every process is stopped.
    def interrupt(signum: int, frame: FrameType | None) -> None:
        signal.raise_signal(signal.SIGINT)

    # A shell that starts this in the background ignores SIGINT: SIGTERM would then do nothing.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    started = time.monotonic()
    try:
        report = bench(args)
    except BenchError as exc:
        print(f"bench/scale.py: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every process this benchmark started was stopped", file=sys.stderr)
        return 130
    print_report(report, args)
    print(f"\n(took {time.monotonic() - started:.0f} s)")
    if args.json is not None:
        write_json(args.json, report, args)
    return 1 if report.failures or report.notes else 0


if __name__ == "__main__":
    sys.exit(main())
