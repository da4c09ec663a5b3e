"""Processes the suite starts: the service (`serve`, `worker`), a throwaway PostgreSQL and the
fake model, each bound to 127.0.0.1 and stopped on exit whatever happens (see `Resources`)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

import httpx

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
POSTGRES_SCRIPT = ROOT / ".ci" / "postgres.sh"
READY_TIMEOUT_SECONDS = 90.0
STOP_GRACE_SECONDS = 10.0
KILL_WAIT_SECONDS = 5.0
POSTGRES_TIMEOUT_SECONDS = 120.0


class BenchError(RuntimeError):
    """A workload could not be set up or did not behave (a process died, a run was lost)."""


class Resources(ExitStack):
    """An exit stack whose closing (stopping processes) a Ctrl-C or SIGTERM cannot cut short:
    the signal is noted and raised once everything is stopped."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        received: list[int] = []

        def note(signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            print("still stopping the processes the suite started...", file=sys.stderr)

        previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            suppressed = bool(super().__exit__(exc_type, exc, traceback))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if received:
            raise KeyboardInterrupt
        return suppressed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def child_env(**values: str) -> dict[str, str]:
    """This environment without any of the service's settings (a stray DATABASE_URL would
    point a child elsewhere), plus `values`."""
    names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    env.update(values)
    return env


def agent_runs_command() -> str:
    """The `agent-runs` script of this environment (`uv run` puts it beside the interpreter)."""
    beside = Path(sys.executable).with_name("agent-runs")
    found = str(beside) if beside.exists() else shutil.which("agent-runs")
    if found is None:
        raise BenchError("no `agent-runs` command: run the suite with `uv run python -m bench`")
    return found


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process(process: subprocess.Popen[bytes], name: str) -> None:
    """SIGTERM (the service and uvicorn stop gracefully), then SIGKILL; every wait bounded."""
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
    name: str,
    args: Sequence[str],
    env: dict[str, str],
    log: Path,
    *,
    cpus: str | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with its output in `log`, stopped on exit. Its own session, so a Ctrl-C
    reaches the suite only, which then stops it in order. `cpus` pins it (`taskset -c`)."""
    if cpus is not None:
        args = ["taskset", "-c", cpus, *args]  # taskset execs the command: the pid is its own
    with log.open("ab") as output:
        process = subprocess.Popen(
            args,
            env=env,
            cwd=cwd or log.parent,  # a temp dir: no stray `.env`, no `./agent-runs.db`
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


def _postgres_script(action: str, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(POSTGRES_SCRIPT), action, str(directory)],
        capture_output=True,
        text=True,
        timeout=POSTGRES_TIMEOUT_SECONDS,
        start_new_session=True,
        check=False,
    )


def _stop_postgres(directory: Path) -> None:
    try:
        result = _postgres_script("stop", directory)
        if result.returncode != 0:
            print(f"stopping PostgreSQL failed:\n{result.stderr}", file=sys.stderr)
    except subprocess.TimeoutExpired:
        print(f"stopping PostgreSQL in {directory} timed out", file=sys.stderr)
    shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class Postgres:
    url: str  # SQLAlchemy's
    pid: int | None  # the postmaster, parent of every backend: its CPU is the database's


def postgres(stack: ExitStack) -> Postgres:
    """A throwaway PostgreSQL, stopped when `stack` closes."""
    if shutil.which("pg_config") is None:
        raise BenchError("PostgreSQL is not installed (no pg_config)")
    # Directly under the temp root (not /tmp/pytest-*): the server runs as `postgres` and must
    # reach it, and the test suite's cleanup must not.
    directory = Path(tempfile.mkdtemp(prefix="agent-runs-bench-pg."))
    stack.callback(_stop_postgres, directory)  # before starting: a half-started one is stopped
    try:
        result = _postgres_script("start", directory)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"PostgreSQL did not start within {exc.timeout:g} s") from exc
    if result.returncode != 0:
        raise BenchError(f"PostgreSQL did not start ({result.returncode}):\n{result.stderr}")
    url = result.stdout.strip().splitlines()[-1]
    try:
        pid: int | None = int((directory / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    return Postgres(url, pid)


def output(args: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float) -> str:
    """What a command the suite waits for prints; BenchError when it fails or takes too long."""
    try:
        result = subprocess.run(
            args,
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"`{' '.join(args[:6])}` took more than {exc.timeout:g} s") from exc
    if result.returncode != 0:
        raise BenchError(
            f"`{' '.join(args[:6])}` failed ({result.returncode}):\n{result.stderr[-2000:]}"
        )
    return result.stdout


def migrate(url: str, workdir: Path) -> None:
    env = child_env(DATABASE_URL=url, LOG_LEVEL="warning")
    output(
        [agent_runs_command(), "migrate"], env=env, cwd=workdir, timeout=POSTGRES_TIMEOUT_SECONDS
    )


@dataclass
class Service:
    """The service as started: its API's URL and its processes, by name."""

    url: str
    database_url: str
    env: dict[str, str]
    workdir: Path
    stack: ExitStack
    api: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    postgres_pid: int | None = None

    @property
    def dsn(self) -> str:
        """The PostgreSQL URL as asyncpg takes it."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://")

    def pids(self) -> dict[str, int]:
        """The service's own processes (the database apart), for CPU accounting."""
        named = {"api": self.api.pid}
        named |= {f"worker{i}": w.pid for i, w in enumerate(self.workers) if w.poll() is None}
        return named

    def start_worker(self) -> subprocess.Popen[bytes]:
        """One more `agent-runs worker` (a replacement for a killed one, in chaos)."""
        index = len(self.workers)
        log = self.workdir / f"worker{index}.log"
        worker = self.stack.enter_context(
            running(f"worker{index}", [agent_runs_command(), "worker"], self.env, log)
        )
        self.workers.append(worker)
        return worker


def start_service(
    stack: ExitStack,
    workdir: Path,
    *,
    fake_url: str,
    database: str,
    workers: int = 0,
    settings: dict[str, str] | None = None,
) -> Service:
    """`database` "sqlite": one `serve` with its embedded executor on a fresh file;
    "postgres": a throwaway PostgreSQL, one `serve --no-executor` and `workers` workers."""
    postmaster = None
    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    else:
        pg = postgres(stack)
        url, postmaster = pg.url, pg.pid
        migrate(url, workdir)
    port = free_port()
    env = child_env(
        DATABASE_URL=url,
        OPENAI_BASE_URL=fake_url,
        OPENAI_API_KEY="unused",
        DEFAULT_MODEL="bench",
        LOG_LEVEL="warning",
        LOG_FORMAT="json",
        **(settings or {}),
    )
    args = [agent_runs_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    if database != "sqlite":
        args.append("--no-executor")
    api = stack.enter_context(running("agent-runs serve", args, env, workdir / "api.log"))
    service = Service(f"http://127.0.0.1:{port}", url, env, workdir, stack, api)
    service.postgres_pid = postmaster
    for _ in range(workers):
        service.start_worker()
    wait_until_ready(f"{service.url}/readyz", api, "agent-runs serve")
    return service


@dataclass(frozen=True)
class Fake:
    """The fake model as started: its OpenAI base URL and its pid."""

    base_url: str
    pid: int


def start_fake(stack: ExitStack, workdir: Path, *, cpus: str | None = None) -> Fake:
    port = free_port()
    args = [sys.executable, "-m", "bench.fake", "--port", str(port)]
    env = child_env(PYTHONPATH=str(ROOT))
    process = stack.enter_context(
        running("fake model", args, env, workdir / "fake.log", cpus=cpus, cwd=ROOT)
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    wait_until_ready(f"{base_url}/models", process, "fake model")
    return Fake(base_url, process.pid)
