"""Many processes on one PostgreSQL: work hints, session order, and a database restart."""

from __future__ import annotations

import itertools
import signal
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.testing import FakeModel, Rule, Script, call, text
from tests.conftest import ROOT
from tests.processes.conftest import AGENT_RUNS, Api, Cluster, Process, until

Connect = Callable[[Process], Api]

NEVER = "60"  # a poll interval no test outlives: only a work hint can wake the worker


def test_new_and_resumed_runs_reach_an_idle_worker_through_a_hint(
    cluster: Cluster, fake: FakeModel, connect: Connect
) -> None:
    fake.script(
        "m",
        Script(
            rules=[
                Rule(match="^wire", replies=[call("wire", {"amount": 7}), text("wired")]),
                Rule(replies=[text("hello")]),
            ]
        ),
    )
    api = connect(cluster.api(POLL_INTERVAL_SECONDS=NEVER))
    worker = cluster.worker(POLL_INTERVAL_SECONDS=NEVER)
    # Listening: from here on, only hints wake it.
    until(lambda: worker.log_events("channel.connected"), 20, "the worker to listen")

    created = api.http.post("/runs", params={"wait": 20}, json={"agent": "ops", "input": "hi"})
    assert created.json()["status"] == "completed"

    parked = api.http.post("/runs", params={"wait": 20}, json={"agent": "ops", "input": "wire"})
    run = parked.json()
    assert run["status"] == "pending_approval"
    decision = {"call_id": run["pending_approvals"][0]["call_id"], "approved": True}
    api.http.post(f"/runs/{run['id']}/approvals", json={"decisions": [decision]})
    assert api.rested(run["id"], timeout=20)["status"] == "completed"
    assert len(cluster.journal("wire")) == 1


def test_a_session_s_runs_run_in_creation_order_across_workers_and_a_takeover(
    cluster: Cluster, fake: FakeModel, connect: Connect
) -> None:
    fake.script("m", [call("step", {"label": "s", "seconds": 0.05}), text("done", delay=0.05)])
    api = connect(cluster.api())
    workers = [cluster.worker(CONCURRENCY="8") for _ in range(3)]
    sessions = [f"session-{i}" for i in range(6)]
    created: dict[str, list[str]] = defaultdict(list)
    for position in range(4):
        for session in sessions:
            run = api.create(f"{session} #{position}", session_id=session)
            created[session].append(run["id"])
    # One worker dies while the others go on: its runs are taken over, still in order.
    until(lambda: len(cluster.journal("step.started")) >= 6, 20, "the first steps")
    workers[0].kill()

    for session, run_ids in created.items():
        runs = [api.rested(run_id) for run_id in run_ids]
        assert [r["status"] for r in runs] == ["completed"] * 4, session
        for earlier, later in itertools.pairwise(runs):
            assert later["started_at"] >= earlier["finished_at"], (session, earlier, later)
        conversation = api.http.get(f"/sessions/{session}").json()["messages"]
        inputs = [m["content"] for m in conversation if m["role"] == "user"]
        assert inputs == [f"{session} #{position}" for position in range(4)]


POSTGRES_SCRIPT = str(ROOT / ".ci" / "postgres.sh")


@pytest.fixture
def own_postgres(cluster: Cluster) -> Iterator[Callable[[str], None]]:
    """A PostgreSQL of this test's own, migrated, for the cluster to use; the test stops and
    starts it with the callable (`down`, `up`)."""
    # Not under pytest's tmp_path: the server runs as another user, who cannot enter it.
    directory = Path(tempfile.mkdtemp(prefix="agent-runs-pg-"))
    url = subprocess.run(
        [POSTGRES_SCRIPT, "start", str(directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()

    def server(action: str) -> None:
        subprocess.run([POSTGRES_SCRIPT, action, str(directory)], check=True, timeout=60)

    try:
        cluster.database_url = url
        subprocess.run(
            [AGENT_RUNS, "migrate"],
            env=cluster.base_env(),
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield server
    finally:
        subprocess.run([POSTGRES_SCRIPT, "stop", str(directory)], check=False, timeout=60)


def test_runs_survive_a_database_restart_under_load(
    cluster: Cluster, fake: FakeModel, connect: Connect, own_postgres: Callable[[str], None]
) -> None:
    fake.script(
        "m",
        [
            call("step", {"label": "one", "seconds": 0.2}),
            call("step", {"label": "two", "seconds": 0.2}),
            text("done", delay=0.2),
        ],
    )
    api = connect(cluster.api())
    cluster.worker(CONCURRENCY="20")
    run_ids = [api.create(f"load {i}")["id"] for i in range(12)]
    until(lambda: len(cluster.journal("step.started")) >= 6, 20, "the runs to be under way")

    own_postgres("down")
    ready = api.http.get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"
    refused = api.http.post("/runs", json={"agent": "ops", "input": "while down"})
    assert refused.status_code == 503
    assert refused.json()["status"] == 503
    assert refused.headers["retry-after"] == "1"
    own_postgres("up")

    def ready_again() -> bool:
        try:
            return api.http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    until(ready_again, 30, "/readyz to answer 200")
    for run_id in run_ids:
        run = api.rested(run_id, timeout=60)
        assert run["status"] == "completed", run
        assert run["final_output"] == "done"
        events = cluster.stored_events(run_id)
        assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
        names = [name for _, name, _ in events]
        assert names.count("run.completed") == 1
        assert names.count("tool_call.completed") == 2


def test_a_worker_stopped_while_the_database_is_away_exits_and_its_runs_go_on_elsewhere(
    cluster: Cluster, fake: FakeModel, connect: Connect, own_postgres: Callable[[str], None]
) -> None:
    fake.script("m", [call("step", {"label": "one", "seconds": 1}), text("done")])
    api = connect(cluster.api())
    first = cluster.worker(SHUTDOWN_GRACE_SECONDS="0.2")
    run_ids = [api.create(f"run {i}")["id"] for i in range(4)]
    until(lambda: len(cluster.journal("step.started")) == 4, 20, "the steps to start")

    own_postgres("down")
    first.signal(signal.SIGTERM)
    # Its retries are bounded by the lease: it gives the runs up to their leases and exits.
    assert first.wait(timeout=30) == 0
    own_postgres("up")

    cluster.worker()
    for run_id in run_ids:
        assert api.rested(run_id, timeout=60)["status"] == "completed"
    assert len(cluster.journal("step.done")) >= 4
