"""Real `agent-runs serve` and `agent-runs worker` processes on PostgreSQL, to kill, pause and
stop, with the fake model and a journal of every tool call they make.

Every wait here is bounded; waits on another process poll its HTTP API or its log, since no
event crosses the process boundary otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.store.database import Database
from app.store.runs import RunRepository
from app.store.tenancy import EVERY_TENANT
from app.testing import FakeModelServer
from tests.conftest import ROOT, empty_tables, free_port, is_postgres

AGENT_RUNS = str(Path(sys.executable).with_name("agent-runs"))
RESTING = {"completed", "failed", "cancelled", "pending_approval"}
START_TIMEOUT = 30.0

T = TypeVar("T")


def until(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll `check` until it returns something true (bounded), and return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


@dataclass
class Process:
    """One `agent-runs` process and its JSON log."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, signum: signal.Signals) -> None:
        self.popen.send_signal(signum)

    def kill(self) -> None:
        """kill -9: no chance to hand anything back."""
        self.popen.kill()
        self.popen.wait(timeout=10)

    def wait(self, timeout: float = 30) -> int:
        return self.popen.wait(timeout=timeout)

    def metric(self, name: str) -> float:
        """A metric of the process, summed over its labels."""
        response = httpx.get(f"{self.url}/metrics", timeout=5)
        return sum(
            sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == name
        )

    def log_events(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == event:
                found.append(entry)
        return found


@dataclass
class Cluster:
    """Processes on one PostgreSQL database, sharing the test's fake model and journal."""

    database_url: str
    model_url: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)

    @property
    def journal_path(self) -> Path:
        return self.workdir / "journal.jsonl"

    def journal(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.journal_path.exists():
            return []
        entries = [json.loads(line) for line in self.journal_path.read_text().splitlines()]
        return [e for e in entries if kind is None or e["kind"] == kind]

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> Process:
        log_path = self.workdir / f"{name}-{len(self.processes)}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [AGENT_RUNS, *args],
                env={**self.base_env(), **self.env, **env},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = Process(name, popen, log_path)
        self.processes.append(process)
        return process

    def base_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "OPENAI_BASE_URL": self.model_url,
            "OPENAI_API_KEY": "test",
            "AGENTS_MODULE": "tests.processes.agents",
            "DEFAULT_MODEL": "m",
            "MODEL_MAX_RETRIES": "0",
            "TOOL_JOURNAL": str(self.journal_path),
            "LEASE_SECONDS": "2",
            "HEARTBEAT_SECONDS": "0.5",
            "POLL_INTERVAL_SECONDS": "0.5",
            "SHUTDOWN_GRACE_SECONDS": "1",
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        }

    def worker(self, **env: str) -> Process:
        port = free_port()
        process = self._start("worker", ["worker"], {"METRICS_PORT": str(port), **env})
        process.url = f"http://127.0.0.1:{port}"  # its metrics
        return process

    def api(self, **env: str) -> Process:
        """`serve --no-executor` on a free port, once it answers /readyz."""
        return self._serve(["--no-executor"], env)

    def api_with_executor(self, **env: str) -> Process:
        """`serve` (the API with its embedded executor), once it answers /readyz."""
        return self._serve([], env)

    def _serve(self, options: list[str], env: dict[str, str]) -> Process:
        port = free_port()
        process = self._start("api", ["serve", "--port", str(port), *options], env)
        process.url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if process.popen.poll() is not None:
                raise AssertionError(f"the API exited: {process.log_path.read_text()[-2000:]}")
            try:
                return httpx.get(f"{process.url}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        until(ready, START_TIMEOUT, "the API to be ready")
        return process

    def stored_events(self, run_id: str) -> list[tuple[int, str, dict[str, Any]]]:
        """The run's events as stored: (id, name, data) in order."""

        async def read() -> list[tuple[int, str, dict[str, Any]]]:
            db = Database(self.database_url)
            try:
                async with db.session_scope() as session:
                    events = await RunRepository(session, EVERY_TENANT).events_after(
                        run_id, 0, limit=100_000
                    )
                    return [(event.seq, event.name, event.data) for event in events]
            finally:
                await db.dispose()

        return anyio.run(read)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGCONT)  # a paused one cannot die otherwise
                process.popen.kill()
                process.popen.wait(timeout=10)


@pytest.fixture
def cluster(migrated_url: str, fake_server: FakeModelServer, tmp_path: Path) -> Iterator[Cluster]:
    if not is_postgres(migrated_url):
        pytest.skip("many processes need PostgreSQL; SQLite serves one process")
    anyio.run(empty_tables, migrated_url)
    cluster = Cluster(migrated_url, fake_server.base_url, tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop_all()


class Api:
    """A client of an API process, with the waits the tests need."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)

    def create(self, input: str, **fields: Any) -> dict[str, Any]:
        response = self.http.post("/runs", json={"agent": "ops", "input": input, **fields})
        assert response.status_code == 201, response.text
        run: dict[str, Any] = response.json()
        return run

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.http.get(f"/runs/{run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        return run

    def rested(self, run_id: str, timeout: float = 30) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            try:
                run = self.run(run_id)
            except httpx.TransportError:
                return None
            return run if run["status"] in RESTING else None

        return until(check, timeout, f"run {run_id} to rest", every=0.1)

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def connect() -> Iterator[Callable[[Process], Api]]:
    clients: list[Api] = []

    def open_client(process: Process) -> Api:
        assert process.url is not None
        client = Api(process.url)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
