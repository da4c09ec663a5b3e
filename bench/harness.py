"""What the benchmarks share: starting and stopping the service, the fake model and a throwaway
PostgreSQL as processes, reading their CPU time from /proc, and summarizing the service's log.

Imported by the scripts beside it (`uv run python bench/service.py` puts this folder on the path).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

import httpx

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_SCRIPT = ROOT / ".ci" / "postgres.sh"
READY_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
KILL_WAIT_SECONDS = 5.0
POSTGRES_TIMEOUT_SECONDS = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The benchmark could not be set up (a process did not start, a database did not come up)."""


@dataclass
class LogSummary:
    """The service's log of one database: JSON lines by level, and anything else."""

    lines: int = 0
    levels: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)


def cpu_seconds(pid: int) -> float | None:
    """CPU time of a process and of its children, live or ended (Linux /proc); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    total = sum(int(ticks) for ticks in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(cpu_seconds(int(child)) or 0.0 for child in children)


def cpu_snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each process of `pids` and by this driver."""
    used = {name: cpu_seconds(pid) for name, pid in pids.items()}
    return {"driver": time.process_time()} | {k: v for k, v in used.items() if v is not None}


def agent_runs_command() -> str:
    """The `agent-runs` script of this environment (`uv run` puts it beside the interpreter)."""
    beside = Path(sys.executable).with_name("agent-runs")
    found = str(beside) if beside.exists() else shutil.which("agent-runs")
    if found is None:
        raise BenchError("no `agent-runs` command: run this with `uv run python bench/<name>.py`")
    return found


def child_env(**values: str) -> dict[str, str]:
    """This environment without any of the service's settings, plus `values`."""
    names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    env.update(values)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process(process: subprocess.Popen[bytes], name: str) -> None:
    """SIGTERM (uvicorn shuts down gracefully), then SIGKILL; every wait bounded."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        print(f"{name} (pid {process.pid}) ignored SIGTERM; killing it", file=sys.stderr)
        process.kill()
        try:
            process.wait(KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            print(f"{name} (pid {process.pid}) survived SIGKILL", file=sys.stderr)


@contextmanager
def running(
    name: str, args: Sequence[str], env: dict[str, str], cwd: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, its output in `log`, stopped on exit. Its own session, so a Ctrl-C
    reaches this driver only, which then stops it in order."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,  # a temp dir: no stray `.env`, no `./agent-runs.db`
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    except Exception:  # a failure (not Ctrl-C): the log may say why
        stop_process(process, name)
        print(f"--- last lines of the {name} log ({log}):\n{tail(log)}", file=sys.stderr)
        raise
    finally:
        stop_process(process, name)


def wait_until_ready(url: str, process: subprocess.Popen[bytes], name: str) -> None:
    """Poll `url` until it answers 200, the process exits, or the time runs out."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchError(f"{name} exited with {process.returncode} before it was ready")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise BenchError(f"{name} was not ready at {url} within {READY_TIMEOUT_SECONDS:g} s")


def postgres(stack: ExitStack) -> tuple[str, int | None]:
    """A throwaway PostgreSQL, stopped when `stack` closes; its SQLAlchemy URL and the pid of
    its postmaster (the parent of every server process), when that can be read."""
    if shutil.which("pg_config") is None:
        raise BenchError("PostgreSQL is not installed (no pg_config); try --db sqlite")
    # Directly under the temp root: the server runs as `postgres` and must reach the directory.
    directory = Path(tempfile.mkdtemp(prefix="agent-runs-bench-pg."))
    stack.callback(stop_postgres, directory)  # before starting: a half-started one is stopped
    try:
        result = subprocess.run(
            [str(POSTGRES_SCRIPT), "start", str(directory)],
            capture_output=True,
            text=True,
            timeout=POSTGRES_TIMEOUT_SECONDS,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"PostgreSQL did not start within {exc.timeout:g} s") from exc
    if result.returncode != 0:
        raise BenchError(f"PostgreSQL did not start ({result.returncode}):\n{result.stderr}")
    url = result.stdout.strip().splitlines()[-1]
    try:
        pid = int((directory / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    return url, pid


def stop_postgres(directory: Path) -> None:
    try:
        result = subprocess.run(
            [str(POSTGRES_SCRIPT), "stop", str(directory)],
            capture_output=True,
            text=True,
            timeout=POSTGRES_TIMEOUT_SECONDS,
            start_new_session=True,
            check=False,
        )
        if result.returncode != 0:
            print(f"stopping PostgreSQL failed:\n{result.stderr}", file=sys.stderr)
    except subprocess.TimeoutExpired:
        print(f"stopping PostgreSQL in {directory} timed out", file=sys.stderr)
    shutil.rmtree(directory, ignore_errors=True)


def migrate(command: str, url: str, cwd: Path) -> None:
    try:
        result = subprocess.run(
            [command, "migrate"],
            env=child_env(DATABASE_URL=url, LOG_LEVEL="warning"),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=POSTGRES_TIMEOUT_SECONDS,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"`agent-runs migrate` took more than {exc.timeout:g} s") from exc
    if result.returncode != 0:
        raise BenchError(f"`agent-runs migrate` failed ({result.returncode}):\n{result.stderr}")


@contextmanager
def signals_deferred() -> Iterator[None]:
    """While processes are being stopped, a Ctrl-C or SIGTERM is noted, then raised after."""
    received: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        print("still stopping the processes this benchmark started...", file=sys.stderr)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt


class Resources(ExitStack):
    """An exit stack whose closing (stopping processes) a second Ctrl-C does not cut short."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        with signals_deferred():
            return bool(super().__exit__(exc_type, exc, traceback))


def summarize_log(path: Path) -> LogSummary:
    summary = LogSummary()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return summary
    for line in lines:
        if not line.strip():
            continue
        summary.lines += 1
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            level = str(record.get("level", "?"))
            event = str(record.get("event", "?"))
        else:
            level, event = "unstructured", line[:120]
        summary.levels[level] += 1
        summary.events[f"{level}: {event}"] += 1
        if len(summary.examples) < 5:
            summary.examples.append(line[:500])
    return summary


def git_revision() -> str | None:
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None
