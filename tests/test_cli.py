"""The `agent-runs` command: refusals on SQLite, migrate, fake-model and serve as processes."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.store.database import Database, DatabaseInUse
from app.testing import FakeModel, FakeModelServer, text
from tests.conftest import free_port

AGENT_RUNS = str(Path(sys.executable).with_name("agent-runs"))


def wait_until_listening(process: subprocess.Popen[str], port: int) -> None:
    """Bounded: until the process accepts connections on the port (or has exited)."""
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError(f"the process exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.1)  # another process: no event of ours to await
    raise AssertionError(f"nothing listens on port {port}")


def stop(process: subprocess.Popen[str], signum: int) -> None:
    process.send_signal(signum)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def env(**values: str) -> dict[str, str]:
    return {**os.environ, "LOG_FORMAT": "json", **values}


def agent_runs(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """Run the command to its end (bounded) and keep what it printed."""
    return subprocess.run(
        [AGENT_RUNS, *args],
        env=env(**environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_worker_on_sqlite_is_refused(tmp_path: Path) -> None:
    result = agent_runs("worker", DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")

    assert result.returncode == 2
    assert "`worker` needs PostgreSQL" in result.stderr


def test_a_second_process_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    holder = Database(url)
    holder.claim_sqlite_file()
    try:
        with pytest.raises(DatabaseInUse, match="SQLite serves one process"):
            Database(url).claim_sqlite_file()
        result = agent_runs("serve", "--port", str(free_port()), DATABASE_URL=url)
    finally:
        holder.release_sqlite_file()

    assert result.returncode == 2
    assert "another agent-runs process is using the SQLite database" in result.stderr


def test_migrate_builds_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    result = agent_runs("migrate", DATABASE_URL=f"sqlite:///{path}")

    assert result.returncode == 0, result.stderr
    assert "migrations applied" in result.stdout
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"runs", "run_events", "sessions", "alembic_version"} <= tables


@pytest.fixture
def fake_model_process() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [AGENT_RUNS, "fake-model", "--port", str(port)],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_until_listening(process, port)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process, signal.SIGINT)


def serve_one_run(
    environment: dict[str, str], run: dict[str, Any], cwd: Path | None = None
) -> tuple[httpx.Response, int | None]:
    """Start `serve`, post `run` and wait for it, stop the process gracefully: the answer and
    the exit code."""
    port = free_port()
    process = subprocess.Popen(
        [AGENT_RUNS, "serve", "--port", str(port)],
        cwd=cwd,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_until_listening(process, port)
        response = httpx.post(
            f"http://127.0.0.1:{port}/runs", params={"wait": 20}, json=run, timeout=30
        )
    finally:
        stop(process, signal.SIGTERM)
    return response, process.returncode


def test_serve_runs_an_example_agent_against_the_fake_model(
    fake_model_process: str, tmp_path: Path
) -> None:
    response, returncode = serve_one_run(
        env(DATABASE_URL=f"sqlite:///{tmp_path / 'serve.db'}", OPENAI_BASE_URL=fake_model_process),
        {"agent": "triage", "input": "please add 2 and 3", "context": {"user_id": "u1"}},
    )

    assert response.status_code == 201, response.text
    assert response.json()["status"] == "completed"
    assert response.json()["final_output"] == "2 + 3 = 5."
    assert returncode == 0  # a graceful stop


def test_a_stopping_serve_answers_a_held_wait_at_once(
    fake_server: FakeModelServer, fake: FakeModel, tmp_path: Path
) -> None:
    fake.script("*", [text("slow", hold_after=[0])])
    port = free_port()
    process = subprocess.Popen(
        [AGENT_RUNS, "serve", "--port", str(port)],
        env=env(
            DATABASE_URL=f"sqlite:///{tmp_path / 'serve.db'}",
            OPENAI_BASE_URL=fake_server.base_url,
            SHUTDOWN_GRACE_SECONDS="0.2",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_until_listening(process, port)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(
                httpx.post,
                f"http://127.0.0.1:{port}/runs",
                params={"wait": 60},
                json={"agent": "triage", "input": "hello"},
                timeout=30,
            )
            assert fake.wait_for_requests(1)
            process.send_signal(signal.SIGTERM)
            response = waiting.result(timeout=20)
        # Well before the wait's 60 s: the shutdown is not held by the waiting request.
        assert process.wait(timeout=20) == 0
    finally:
        fake.release()
        if process.poll() is None:
            stop(process, signal.SIGKILL)

    assert response.status_code == 201
    assert response.json()["status"] in ("running", "queued")


def test_fake_model_refuses_an_unknown_dialect() -> None:
    result = agent_runs("fake-model", "--dialect", "nosuch", "--port", str(free_port()))

    assert result.returncode == 2
    assert "unknown dialect 'nosuch'; one of: anthropic-openai, azure" in result.stderr


def test_backup_copies_a_served_sqlite_database_while_it_runs(
    fake_model_process: str, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'serve.db'}"
    port = free_port()
    process = subprocess.Popen(
        [AGENT_RUNS, "serve", "--port", str(port)],
        env=env(DATABASE_URL=database, OPENAI_BASE_URL=fake_model_process),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    copy = tmp_path / "copy.db"
    try:
        wait_until_listening(process, port)
        run = httpx.post(
            f"http://127.0.0.1:{port}/runs",
            params={"wait": 20},
            json={"agent": "triage", "input": "please add 2 and 3"},
            timeout=30,
        ).json()
        result = agent_runs("backup", str(copy), DATABASE_URL=database)
        again = agent_runs("backup", str(copy), DATABASE_URL=database)
    finally:
        stop(process, signal.SIGTERM)

    assert result.returncode == 0, result.stderr
    with sqlite3.connect(copy) as connection:
        stored = connection.execute("SELECT status FROM runs WHERE id = ?", (run["id"],)).fetchall()
    assert stored == [("completed",)]
    assert again.returncode == 2
    assert "exists" in again.stderr
    refused = agent_runs(
        "backup", str(tmp_path / "pg.db"), DATABASE_URL="postgresql://u@127.0.0.1:1/db"
    )
    assert refused.returncode == 2
    assert "pg_dump" in refused.stderr


def test_serve_reload_serves_the_example_agents_with_their_mcp_server(tmp_path: Path) -> None:
    """`--reload` builds its app inside uvicorn's event loop: the example MCP server is
    connected by the runtime there, not checked by a loop of the command's own."""
    port = free_port()
    process = subprocess.Popen(
        [AGENT_RUNS, "serve", "--reload", "--port", str(port)],
        cwd=tmp_path,
        env=env(DATABASE_URL=f"sqlite:///{tmp_path / 'reload.db'}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_until_listening(process, port)
        librarian = httpx.get(f"http://127.0.0.1:{port}/agents/librarian", timeout=30).json()
    finally:
        stop(process, signal.SIGTERM)

    assert librarian["mcp_servers"][0]["status"] == "available"
    assert [tool["name"] for tool in librarian["tools"]] == ["find_note", "add_note"]
