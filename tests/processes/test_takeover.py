"""Crash takeover across real processes: kill -9, SIGTERM, SIGSTOP, a poison run.

Contract, "Crash takeover": a model call in flight is repeated, a started `idempotent` tool
call is run again with the same call id, a started `unsafe` one parks the run with the call
`in_doubt`; no stored result is produced twice, and no run is driven by two processes at once.
"""

from __future__ import annotations

import itertools
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from app.testing import FakeModel, FakeModelServer, Reply, Rule, Script, call, text
from tests.conftest import is_postgres
from tests.processes.conftest import RESTING, Api, Cluster, Process, until

Connect = Callable[[Process], Api]

STEP_SECONDS = 3.0


def script_ops(fake: FakeModel, *, think: Reply | None = None) -> None:
    """`step-*` runs one idempotent step, `charge-*` one unsafe charge, `think-*` a slow
    model answer; all then answer with text."""
    fake.script(
        "m",
        Script(
            rules=[
                Rule(
                    match="^step",
                    replies=[
                        call("step", {"label": "s", "seconds": STEP_SECONDS}),
                        text("stepped"),
                    ],
                ),
                Rule(
                    match="^charge",
                    replies=[
                        call("charge", {"amount": 5, "seconds": STEP_SECONDS}),
                        text("charged"),
                    ],
                ),
                Rule(match="^think", replies=[think or text("thought", delay=STEP_SECONDS)]),
                Rule(match="^crash", replies=[call("crash"), text("survived")]),
            ]
        ),
    )


def assert_one_owner_at_a_time(cluster: Cluster, run_id: str) -> None:
    """The stored log is one story: ids without gaps, one start, one resume per claim after
    the first, and no tool call completed twice."""
    events = cluster.stored_events(run_id)
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    names = Counter(name for _, name, _ in events)
    assert names["run.started"] == 1
    completed = Counter(
        data["call_id"] for _, name, data in events if name == "tool_call.completed"
    )
    assert all(count == 1 for count in completed.values()), completed


def test_a_killed_worker_s_runs_are_finished_or_parked_in_doubt_by_another(
    cluster: Cluster, fake: FakeModel, connect: Connect
) -> None:
    script_ops(fake)
    api = connect(cluster.api())
    first = cluster.worker(CONCURRENCY="20")
    runs = {
        kind: [api.create(f"{kind}-{i}")["id"] for i in range(3)]
        for kind in ("step", "charge", "think")
    }
    # Every run is mid-turn: both tools started (and sleeping), the model calls waiting.
    until(lambda: len(cluster.journal()) == 6, 20, "six tool calls to start")
    assert fake.wait_for_requests(9)

    first.kill()
    second = cluster.worker(CONCURRENCY="20")

    for run_id in runs["step"] + runs["think"]:
        assert api.rested(run_id)["status"] == "completed"
    for run_id in runs["charge"]:
        run = api.rested(run_id)
        assert run["status"] == "pending_approval"
        [pending] = run["pending_approvals"]
        assert pending["in_doubt"] is True
        assert pending["tool"] == "charge"
    for run_id in itertools.chain(*runs.values()):
        assert_one_owner_at_a_time(cluster, run_id)

    # Each idempotent step ran once per crash, the second time with the same call id.
    starts = Counter(e["call_id"] for e in cluster.journal("step.started"))
    assert sorted(starts.values()) == [2, 2, 2]
    finishers = {e["pid"] for e in cluster.journal("step.done")}
    assert finishers == {second.pid}
    # The unsafe charges never ran again without a person.
    assert [e["pid"] for e in cluster.journal("charge.started")] == [first.pid] * 3
    # The slow model calls were repeated by the new owner.
    assert len(fake.requests_for("m")) >= 9 + 3 + 3

    # A person approves one charge in doubt: it runs again, once.
    decided = api.http.post(
        f"/runs/{runs['charge'][0]}/approvals",
        json={"decisions": [{"call_id": pending_call(api, runs["charge"][0]), "approved": True}]},
    )
    assert decided.status_code == 200, decided.text
    assert api.rested(runs["charge"][0])["status"] == "completed"
    assert len(cluster.journal("charge.done")) == 1
    assert second.log_events("executor.lease_fenced") == []
    assert second.metric("agent_runs_takeovers_total") == 9


def pending_call(api: Api, run_id: str) -> str:
    call_id: str = api.run(run_id)["pending_approvals"][0]["call_id"]
    return call_id


@pytest.mark.parametrize("first_kind", ["worker", "serve"])
def test_a_process_stopped_by_sigterm_hands_its_runs_over_at_once(
    cluster: Cluster, fake: FakeModel, connect: Connect, first_kind: str
) -> None:
    # The model holds every answer until the test lets it go: the first process is still in
    # its model calls when it is stopped, however slowly the second one starts.
    script_ops(fake, think=text("thought", hold_after=[0]))
    # Leases and polls far longer than the test: only the hand-back and the work hint can
    # get the runs to the second worker this soon.
    slow = {"LEASE_SECONDS": "120", "HEARTBEAT_SECONDS": "5", "POLL_INTERVAL_SECONDS": "60"}
    api = connect(cluster.api(**slow))
    if first_kind == "worker":
        first = cluster.worker(SHUTDOWN_GRACE_SECONDS="0.2", **slow)
    else:  # an API process with its embedded executor: uvicorn's shutdown, then the hand-back
        first = cluster.api_with_executor(SHUTDOWN_GRACE_SECONDS="0.2", **slow)
    run_ids = [api.create(f"think-{i}")["id"] for i in range(4)]
    assert fake.wait_for_requests(4)
    second = cluster.worker(**slow)
    # Listening, too: a hint sent before that is lost, and only the 60 s poll would find it.
    until(lambda: second.log_events("channel.connected"), 20, "the second worker to listen")

    first.signal(signal.SIGTERM)
    assert first.wait(timeout=20) == 0
    # The second worker repeats the four model calls (bounded generously: a loaded 2-core
    # machine starts and claims slowly, and only a lost hint would take 60 s).
    assert fake.wait_for_requests(8, timeout=30)
    for _ in range(8):  # the abandoned calls' holds take a release each, in any order
        fake.release()

    for run_id in run_ids:
        assert api.rested(run_id, timeout=20)["status"] == "completed"
        lifecycle = [name for _, name, _ in cluster.stored_events(run_id) if name[:4] == "run."]
        assert lifecycle == [
            "run.queued",
            "run.started",
            "run.queued",  # handed back by the first worker
            "run.resumed",
            "run.completed",
        ]
        assert_one_owner_at_a_time(cluster, run_id)
    assert len(first.log_events("run.released")) == 4
    assert len(second.log_events("run.started")) == 4


def test_a_paused_worker_whose_lease_expired_cannot_write_when_it_wakes(
    cluster: Cluster, fake: FakeModel, connect: Connect
) -> None:
    script_ops(fake)
    api = connect(cluster.api())
    paused = cluster.worker()
    run_id = api.create("step-0")["id"]
    until(lambda: cluster.journal("step.started"), 20, "the step to start")
    paused.signal(signal.SIGSTOP)

    taker = cluster.worker()
    assert api.rested(run_id)["status"] == "completed"
    stored = cluster.stored_events(run_id)

    paused.signal(signal.SIGCONT)
    until(lambda: paused.log_events("executor.lease_fenced"), 20, "the fence")
    assert paused.metric("agent_runs_lease_fenced_total") >= 1
    assert taker.metric("agent_runs_takeovers_total") == 1
    # Its tool call finished after it woke, and nothing of it was stored.
    until(lambda: len(cluster.journal("step.done")) == 2, 20, "the paused step to finish")
    paused.signal(signal.SIGTERM)
    assert paused.wait(timeout=20) == 0
    assert cluster.stored_events(run_id) == stored
    outputs = [data["output"] for _, name, data in stored if name == "tool_call.completed"]
    assert outputs == [f"s done by {taker.pid}"]
    assert {e["pid"] for e in cluster.journal("step.started")} == {paused.pid, taker.pid}


def test_a_run_that_keeps_killing_its_executor_fails_after_the_bounded_takeovers(
    cluster: Cluster, fake: FakeModel, connect: Connect
) -> None:
    script_ops(fake)
    limit = {"MAX_TAKEOVERS": "1", "LEASE_SECONDS": "1", "HEARTBEAT_SECONDS": "0.2"}
    api = connect(cluster.api(**limit))
    run_id = api.create("crash")["id"]
    killed = 0
    for _ in range(4):  # a crash, a takeover that crashes too, then one that gives up
        worker = cluster.worker(**limit)

        def died_or_rested(worker: Process = worker) -> bool:
            return worker.popen.poll() is not None or api.run(run_id)["status"] in RESTING

        until(died_or_rested, 30, "the worker to die or the run to rest")
        if worker.popen.poll() is None:
            break
        assert worker.popen.returncode == -signal.SIGKILL
        killed += 1
    run = api.rested(run_id)
    assert run["status"] == "failed"
    assert run["error"]["code"] == "internal_error"
    assert "taken over 2 times" in run["error"]["message"]
    assert killed == 2
    assert len(cluster.journal("crash")) == 2


def test_a_killed_sqlite_service_takes_its_runs_over_when_it_starts_again(
    migrated_url: str, fake_server: FakeModelServer, fake: FakeModel, tmp_path: Path
) -> None:
    """SQLite's file lock proves the old process is gone: its runs need not wait a lease."""
    if is_postgres(migrated_url):
        pytest.skip("SQLite's own restart; the PostgreSQL pass has the lease takeovers above")
    database = f"sqlite+aiosqlite:///{tmp_path / 'agent-runs.db'}"
    lease = {"LEASE_SECONDS": "300", "HEARTBEAT_SECONDS": "5"}
    cluster = Cluster(database, fake_server.base_url, tmp_path, env=lease)
    try:
        script_ops(fake, think=text("thought", delay=600))
        first = cluster.api_with_executor()
        run = Api(str(first.url)).create("think-1")
        assert fake.wait_for_requests(1, "m")  # the model call is in flight
        first.kill()
        script_ops(fake)
        second = cluster.api_with_executor()

        finished = Api(str(second.url)).rested(run["id"], timeout=30)  # not the 300 s lease

        assert finished["status"] == "completed"
        assert finished["final_output"] == "thought"
        assert second.log_events("runs.orphans_taken_over")[0]["count"] == 1
    finally:
        cluster.stop_all()


def test_a_run_taken_over_mid_repair_goes_on_with_its_repair_count(
    cluster: Cluster, fake: FakeModel, connect: Connect
) -> None:
    """Structured output: the repair and its count are in the stored state, so the new owner
    asks the model again (the call in flight is repeated) and counts the repair already spent:
    with one retry allowed, the answer that still does not validate fails the run."""
    fake.script(
        "m",
        Script(
            rules=[
                Rule(
                    match="did not validate",
                    replies=[text("still not JSON", delay=STEP_SECONDS)],
                ),
                Rule(replies=[text("not JSON")]),
            ]
        ),
    )
    api = connect(cluster.api())
    first = cluster.worker()
    schema = {"type": "object", "properties": {"total": {"type": "integer"}}}
    run = api.create("shape", output_schema=schema, config={"output_retries": 1})
    assert fake.wait_for_requests(2)  # the answer, then the repair, in flight

    first.kill()
    second = cluster.worker()
    finished = api.rested(run["id"])

    assert finished["status"] == "failed"
    assert finished["error"]["code"] == "output_invalid"
    assert "(2 tries)" in finished["error"]["message"]
    assert len(fake.requests_for("m")) == 3  # the repair asked again, not a repair more
    repairs = [m for m in finished["messages"] if "did not validate" in str(m.get("content"))]
    assert len(repairs) == 1
    assert_one_owner_at_a_time(cluster, run["id"])
    assert second.metric("agent_runs_takeovers_total") == 1


def test_a_run_taken_over_mid_output_check_checks_the_stored_answer_again(
    cluster: Cluster, fake: FakeModel, connect: Connect
) -> None:
    """Guardrails: the answer is stored before its output guardrail runs, so the worker that
    takes the run over from a killed one checks that answer again; the model is asked once."""
    fake.script("m", [text("a slow answer")])
    api = connect(cluster.api())
    first = cluster.worker()
    run = api.create("answer", agent="reviewed")
    until(lambda: cluster.journal("review.started"), 20, "the review to start")

    first.kill()
    second = cluster.worker()
    finished = api.rested(run["id"])

    assert (finished["status"], finished["final_output"]) == ("completed", "a slow answer")
    assert len(fake.requests_for("m")) == 1
    reviews = cluster.journal("review.started")
    assert [r["output"] for r in reviews] == ["a slow answer", "a slow answer"]
    assert len({r["pid"] for r in reviews}) == 2
    [done] = cluster.journal("review.done")
    assert done["pid"] == reviews[1]["pid"]
    assert_one_owner_at_a_time(cluster, run["id"])
    assert second.metric("agent_runs_takeovers_total") == 1


@pytest.mark.parametrize(("tool_name", "repeated"), [("slow", True), ("slow_write", False)])
def test_a_worker_killed_mid_mcp_call_leaves_it_to_be_repeated_only_when_read_only(
    cluster: Cluster, fake: FakeModel, connect: Connect, tool_name: str, repeated: bool
) -> None:
    """MCP tools take their effect from their annotations: the worker that takes the run over
    calls a read-only tool again, and parks an unsafe one in doubt for a person."""
    fake.script("m", [call(tool_name, {"seconds": STEP_SECONDS}), text("done")])
    mcp = {"AGENTS_MODULE": "tests.processes.mcp_agents"}
    api = connect(cluster.api(**mcp))
    first = cluster.worker(**mcp)
    run = api.create("work")
    until(lambda: cluster.journal(f"{tool_name}.started"), 30, "the MCP call to start")

    first.kill()
    cluster.worker(**mcp)

    rested = api.rested(run["id"])
    started = cluster.journal(f"{tool_name}.started")
    if repeated:
        assert rested["status"] == "completed"
        assert len(started) == 2
        assert len({entry["pid"] for entry in started}) == 2  # one server process per worker
    else:
        assert rested["status"] == "pending_approval"
        [pending] = rested["pending_approvals"]
        assert (pending["tool"], pending["in_doubt"]) == ("slow_write", True)
        assert len(started) == 1
    assert_one_owner_at_a_time(cluster, run["id"])
