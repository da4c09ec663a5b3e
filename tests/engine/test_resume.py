"""A stored state continues to the same result in any process, and after a crash."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from app import Agent, RunContext, tool
from app.engine import Completed, DecisionInput, Paused, RunState
from app.testing import FakeModel, FakeModelServer, calls, text
from tests.engine import resume_agents
from tests.engine.conftest import EngineFactory, Recorder

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    """A finished state without its timings, which differ from run to run."""
    state = json.loads(json.dumps(state))
    state.pop("elapsed_ms")
    for step in state["steps"]:
        step.pop("duration_ms")
    return state


async def finish_in_another_process(states_json: str, base_url: str) -> list[dict[str, Any]]:
    result = await anyio.run_process(
        [sys.executable, "-m", "tests.engine.resume_child", base_url],
        input=states_json.encode(),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    finished: list[dict[str, Any]] = json.loads(result.stdout)
    return finished


async def test_a_state_saved_after_any_turn_finishes_the_same_elsewhere(
    fake_server: FakeModelServer, fake: FakeModel
) -> None:
    resume_agents.script(fake)
    engine = resume_agents.build_engine(fake_server.base_url)
    state = engine.start("triage", "sums please", variables={"user": "ada"}, run_id="run_r")
    saved_after_turn: list[dict[str, Any]] = []
    while True:
        result = await engine.advance(state)
        saved_after_turn.append(json.loads(json.dumps(state.to_json())))
        if result.outcome == Completed("All sums done."):
            break
        assert len(saved_after_turn) < 10
    await engine.aclose()
    uninterrupted = comparable(state.to_json())
    assert uninterrupted["current_agent"] == "billing"
    assert uninterrupted["turns"] == 5

    resumable = saved_after_turn[:-1]
    finished = await finish_in_another_process(json.dumps(resumable), fake_server.base_url)
    assert len(finished) == len(resumable) == 4
    for resumed in finished:
        assert comparable(resumed) == uninterrupted


async def test_crash_during_tools_repeats_only_safe_calls(
    make_engine: EngineFactory, fake: FakeModel, recorder: Recorder
) -> None:
    runs: list[tuple[str, str | None]] = []
    release = anyio.Event()
    both_started = [anyio.Event(), anyio.Event()]

    @tool(effect="idempotent")
    async def charge_once(ctx: RunContext) -> str:
        """Charge with the call id as idempotency key."""
        runs.append(("charge_once", ctx.call_id))
        both_started[0].set()
        await release.wait()
        return "charged"

    @tool
    async def send_email(ctx: RunContext) -> str:
        """Unsafe: sends an email."""
        runs.append(("send_email", ctx.call_id))
        both_started[1].set()
        await release.wait()
        return "sent"

    fake.script("m", [calls(("charge_once", {}), ("send_email", {})), text("done")])
    engine = make_engine([Agent(name="a", model="m", tools=[charge_once, send_email])])
    state = engine.start("a", "go")

    # The process "dies" while both calls are in flight, after their start was stored.
    async with anyio.create_task_group() as group:
        group.start_soon(engine.run, state, recorder)
        with anyio.fail_after(10):
            for started in both_started:
                await started.wait()
        group.cancel_scope.cancel()
    stored, _ = recorder.checkpoints[0]
    assert [c["status"] for c in stored["steps"][0]["tool_calls"]] == ["running", "running"]
    charge_id, email_id = (c["call_id"] for c in stored["steps"][0]["tool_calls"])
    release.set()

    taken_over = RunState.from_json(stored)
    result = await engine.run(taken_over)

    assert isinstance(result.outcome, Paused)
    [pending] = taken_over.pending_approvals
    assert (pending.call_id, pending.tool, pending.in_doubt) == (email_id, "send_email", True)
    assert runs == [
        ("charge_once", charge_id),
        ("send_email", email_id),
        ("charge_once", charge_id),
    ]
    assert len(fake.requests_for("m")) == 1  # the model call was not repeated

    engine.decide(taken_over, [DecisionInput(email_id, False, reason="it was sent")])
    result = await engine.run(taken_over)

    assert result.outcome == Completed("done")
    tool_outputs = [m["content"] for m in taken_over.messages if m["role"] == "tool"]
    assert tool_outputs[0] == "charged"
    assert tool_outputs[1].startswith("The tool call was not done: it was interrupted")
    assert tool_outputs[1].endswith("Reason: it was sent")


async def test_in_doubt_call_approved_runs_again(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    runs: list[str | None] = []

    @tool
    def transfer(ctx: RunContext) -> str:
        """Unsafe transfer."""
        runs.append(ctx.call_id)
        return "transferred"

    fake.script("m", [calls(("transfer", {})), text("done")])
    engine = make_engine([Agent(name="a", model="m", tools=[transfer])])
    state = engine.start("a", "go")
    # A state stored after the start of the call and before its result.
    state.turns = 1
    state.messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "transfer", "arguments": "{}"},
                }
            ],
        }
    )
    stored = state.to_json()
    stored["open_step"] = True
    stored["steps"] = [
        {
            "agent": "a",
            "duration_ms": 1.0,
            "tool_calls": [
                {
                    "call_id": "c1",
                    "name": "transfer",
                    "raw_arguments": "{}",
                    "arguments": {},
                    "status": "running",
                }
            ],
        }
    ]
    taken_over = RunState.from_json(stored)

    result = await engine.run(taken_over)
    assert isinstance(result.outcome, Paused)
    assert runs == []
    engine.decide(taken_over, [DecisionInput("c1", True)])
    result = await engine.run(taken_over)

    assert runs == ["c1"]
    assert result.outcome == Completed("done")
