"""`agent-runs worker` as a real process on PostgreSQL, beside an API-only app."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.testing import FakeModel, FakeModelServer, call, text
from tests.api.conftest import ClientFactory
from tests.conftest import ROOT, is_postgres

pytestmark = pytest.mark.anyio

AGENT_RUNS = str(Path(sys.executable).with_name("agent-runs"))


@pytest.fixture
def start_worker(db_url: str, fake_server: FakeModelServer, tmp_path: Path) -> Iterator[object]:
    if not is_postgres(db_url):
        pytest.skip("workers need PostgreSQL; SQLite serves one process")
    processes: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "OPENAI_BASE_URL": fake_server.base_url,
            "AGENTS_MODULE": "tests.api.agents",
            "DEFAULT_MODEL": "m",
            "POLL_INTERVAL_SECONDS": "0.1",
            "PYTHONPATH": str(ROOT),
        }
        log = (tmp_path / f"worker-{len(processes)}.log").open("w")
        process = subprocess.Popen(
            [AGENT_RUNS, "worker", "--concurrency", "4"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()  # the child holds its own descriptor
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


async def test_a_worker_process_completes_runs_queued_before_it_started(
    make_client: ClientFactory, fake: FakeModel, start_worker: object
) -> None:
    fake.script("m", [call("add", {"a": 20, "b": 22}), text("42")])
    async with make_client(with_executor=False) as client:
        queued = (
            await client.post("/runs", json={"agent": "calc", "input": "first", "session_id": "s"})
        ).json()
        worker = start_worker()  # type: ignore[operator]

        # A run behind it in the same session returns from `wait` only once both are done.
        waited = await client.post(
            "/runs",
            params={"wait": 30},
            json={"agent": "calc", "input": "second", "session_id": "s"},
        )
        first = (await client.get(f"/runs/{queued['id']}")).json()

    assert waited.json()["status"] == "completed"
    assert first["status"] == "completed"
    assert first["final_output"] == "42"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
