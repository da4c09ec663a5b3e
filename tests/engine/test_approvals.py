"""Approval pauses, human decisions and approval handlers in the engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app import Agent, ApprovalRequest, RunContext, tool
from app.engine import Completed, DecisionInput, Engine, Paused, RunState, RunStatus
from app.engine.errors import (
    CallAlreadyDecided,
    InvalidDecision,
    RunEnded,
    RunNotPending,
    UnknownCall,
)
from app.testing import FakeModel, call, calls, text
from tests.engine.conftest import EngineFactory

pytestmark = pytest.mark.anyio

executed: list[str] = []


@tool(needs_approval=True)
def delete_record(record_id: str) -> str:
    """Delete a record."""
    executed.append(record_id)
    return f"deleted {record_id}"


@tool(needs_approval=lambda args, ctx: args["amount"] > 100)
async def refund(amount: float, ctx: RunContext) -> str:
    """Refund money."""
    executed.append(f"refund {amount:g}")
    return f"refunded {amount:g} to {ctx.variables['user_id']}"


@tool
def lookup(key: str) -> str:
    """Look up."""
    executed.append(f"lookup {key}")
    return f"value of {key}"


@pytest.fixture(autouse=True)
def _clear_executed() -> None:
    executed.clear()


def tool_messages(state: RunState) -> list[str]:
    return [m["content"] for m in state.messages if m["role"] == "tool"]


async def paused_run(engine: Engine, *replies: Any, fake: FakeModel) -> RunState:
    fake.script("m", list(replies))
    state = engine.start("a", "go", variables={"user_id": "u_1"})
    result = await engine.run(state)
    assert isinstance(result.outcome, Paused), result.outcome
    return state


def roundtrip(state: RunState) -> RunState:
    """What a store does between the pause and the decision, possibly days apart."""
    return RunState.from_json(json.loads(json.dumps(state.to_json())))


async def test_pause_keeps_the_turn_and_runs_what_needs_no_approval(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    engine = make_engine([Agent(name="a", model="m", tools=[delete_record, refund, lookup])])
    fake.script(
        "m",
        [
            calls(
                ("delete_record", {"record_id": "r1"}),
                ("refund", {"amount": 50}),
                ("refund", {"amount": 500}),
                ("lookup", {"key": "k"}),
            ),
            text("all done"),
        ],
    )
    state = engine.start("a", "go", variables={"user_id": "u_1"})

    result = await engine.run(state)

    assert isinstance(result.outcome, Paused)
    assert state.status is RunStatus.PENDING_APPROVAL
    assert [(p.tool, p.arguments) for p in state.pending_approvals] == [
        ("delete_record", {"record_id": "r1"}),
        ("refund", {"amount": 500}),
    ]
    assert result.outcome.pending == state.pending_approvals
    assert sorted(executed) == ["lookup k", "refund 50"]
    requested = [e.data for e in result.events if e.name == "approval.requested"]
    assert [r["tool"] for r in requested] == ["delete_record", "refund"]
    assert requested[0] == {
        "call_id": state.pending_approvals[0].call_id,
        "tool": "delete_record",
        "arguments": {"record_id": "r1"},
        "agent": "a",
        "in_doubt": False,
        "kind": "approval",
        "reason": None,
    }

    state = roundtrip(state)
    ids = [p.call_id for p in state.pending_approvals]
    engine.decide(state, [DecisionInput(ids[0], approved=True)], decided_by="ops")
    with_one_undecided = state.status
    engine.decide(state, [DecisionInput(ids[1], approved=False, reason="too much")])
    assert (with_one_undecided, state.status) == (RunStatus.PENDING_APPROVAL, RunStatus.RUNNING)

    result = await engine.run(state)

    assert result.outcome == Completed("all done")
    assert sorted(executed) == ["lookup k", "r1", "refund 50"]
    assert tool_messages(state) == [
        "deleted r1",
        "refunded 50 to u_1",
        "The tool call was rejected and not run. Reason: too much",
        "value of k",
    ]
    assert [(d.approved, d.source, d.decided_by, d.reason) for d in state.decisions] == [
        (True, "human", "ops", None),
        (False, "human", None, "too much"),
    ]
    assert [c.status for c in state.steps[0].tool_calls] == [
        "completed",
        "completed",
        "rejected",
        "completed",
    ]
    assert len(fake.requests_for("m")) == 2  # nothing of the paused turn was asked again


async def test_approve_with_edited_arguments(make_engine: EngineFactory, fake: FakeModel) -> None:
    engine = make_engine([Agent(name="a", model="m", tools=[delete_record])])
    state = await paused_run(
        engine, call("delete_record", {"record_id": "r1"}), text("ok"), fake=fake
    )
    [pending] = state.pending_approvals

    engine.decide(state, [DecisionInput(pending.call_id, True, arguments={"record_id": "r2"})])
    await engine.run(state)

    assert executed == ["r2"]
    assert state.decisions[0].arguments == {"record_id": "r2"}
    assert state.steps[0].tool_calls[0].arguments == {"record_id": "r2"}


async def test_edited_arguments_that_do_not_fit_change_nothing(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    engine = make_engine([Agent(name="a", model="m", tools=[delete_record])])
    state = await paused_run(
        engine, call("delete_record", {"record_id": "r1"}), text("ok"), fake=fake
    )
    [pending] = state.pending_approvals
    before = state.to_json()

    with pytest.raises(InvalidDecision) as caught:
        engine.decide(state, [DecisionInput(pending.call_id, True, arguments={"id": 3})])

    assert {e["loc"] for e in caught.value.errors} == {"record_id", "id"}
    assert state.to_json() == before


async def test_decision_errors(make_engine: EngineFactory, fake: FakeModel) -> None:
    engine = make_engine([Agent(name="a", model="m", tools=[delete_record])])
    state = await paused_run(
        engine,
        calls(("delete_record", {"record_id": "r1"}), ("delete_record", {"record_id": "r2"})),
        text("ok"),
        fake=fake,
    )
    first, second = (p.call_id for p in state.pending_approvals)

    with pytest.raises(UnknownCall):
        engine.decide(state, [DecisionInput("call_nope", True)])
    with pytest.raises(InvalidDecision):
        engine.decide(state, [DecisionInput(first, True), DecisionInput(first, False)])
    engine.decide(state, [DecisionInput(first, True)])
    with pytest.raises(CallAlreadyDecided):
        engine.decide(state, [DecisionInput(first, False)])
    # A failing request changes nothing, even its valid parts.
    with pytest.raises(CallAlreadyDecided):
        engine.decide(state, [DecisionInput(second, True), DecisionInput(first, True)])
    assert [p.call_id for p in state.pending_approvals] == [second]

    engine.decide(state, [DecisionInput(second, True)])
    with pytest.raises(RunNotPending):
        engine.decide(state, [DecisionInput(second, True)])
    await engine.run(state)
    with pytest.raises(RunEnded):
        engine.decide(state, [DecisionInput(second, True)])


async def test_remember_approves_the_tool_for_the_rest_of_the_run(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    engine = make_engine([Agent(name="a", model="m", tools=[delete_record, refund])])
    state = await paused_run(
        engine,
        calls(
            ("delete_record", {"record_id": "r1"}),
            ("delete_record", {"record_id": "r2"}),
            ("refund", {"amount": 500}),
        ),
        call("delete_record", {"record_id": "r3"}),
        text("ok"),
        fake=fake,
    )
    first, second, third = (p.call_id for p in state.pending_approvals)

    engine.decide(state, [DecisionInput(first, True, remember=True)], decided_by="ops")
    assert [p.call_id for p in state.pending_approvals] == [third]
    with pytest.raises(CallAlreadyDecided):
        engine.decide(state, [DecisionInput(second, False)])
    engine.decide(state, [DecisionInput(third, True)])
    result = await engine.run(state)

    assert result.outcome == Completed("ok")
    assert sorted(executed) == ["r1", "r2", "r3", "refund 500"]
    assert [(d.call_id, d.source, d.decided_by) for d in state.decisions] == [
        (first, "human", "ops"),
        (second, "remember", "ops"),
        (third, "human", None),
        (state.steps[1].tool_calls[0].call_id, "remember", None),
    ]


async def test_remember_in_the_same_request_conflicts_with_a_later_decision(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    engine = make_engine([Agent(name="a", model="m", tools=[delete_record])])
    state = await paused_run(
        engine,
        calls(("delete_record", {"record_id": "r1"}), ("delete_record", {"record_id": "r2"})),
        fake=fake,
    )
    first, second = (p.call_id for p in state.pending_approvals)

    with pytest.raises(CallAlreadyDecided):
        engine.decide(
            state, [DecisionInput(first, True, remember=True), DecisionInput(second, False)]
        )
    assert len(state.pending_approvals) == 2


@pytest.mark.parametrize(
    ("verdict", "status", "reason"),
    [
        (True, "completed", None),
        (False, "rejected", None),
        ((False, "policy says no"), "rejected", "policy says no"),
    ],
)
async def test_handler_decides_before_a_human(
    make_engine: EngineFactory, fake: FakeModel, verdict: Any, status: str, reason: str | None
) -> None:
    seen: list[tuple[ApprovalRequest, str | None]] = []

    def handler(request: ApprovalRequest, ctx: RunContext) -> Any:
        seen.append((request, ctx.run_id))
        return verdict

    engine = make_engine(
        [Agent(name="a", model="m", tools=[delete_record], approval_handler=handler)]
    )
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("ok")])
    state = engine.start("a", "go", run_id="run_1")

    result = await engine.run(state)

    assert result.outcome == Completed("ok")
    assert seen[0][0].tool == "delete_record"
    assert seen[0][1] == "run_1"
    assert state.steps[0].tool_calls[0].status == status
    [decision] = state.decisions
    assert (decision.source, decision.reason) == ("handler", reason)
    assert [e.name for e in result.events if e.name.startswith("approval")] == ["approval.decided"]


@pytest.mark.parametrize("outcome", ["none", "raises"])
async def test_handler_that_defers_or_raises_asks_a_human(
    make_engine: EngineFactory, fake: FakeModel, outcome: str
) -> None:
    async def handler(request: ApprovalRequest, ctx: RunContext) -> bool | None:
        if outcome == "raises":
            raise RuntimeError("handler bug")
        return None

    engine = make_engine(
        [Agent(name="a", model="m", tools=[delete_record], approval_handler=handler)]
    )
    state = await paused_run(engine, call("delete_record", {"record_id": "r1"}), fake=fake)

    assert [p.tool for p in state.pending_approvals] == ["delete_record"]
    assert executed == []


async def test_a_rule_that_raises_asks_a_human(make_engine: EngineFactory, fake: FakeModel) -> None:
    @tool(needs_approval=lambda args, ctx: ctx.variables["missing"])
    def risky() -> str:
        """Risky."""
        return "ran"

    engine = make_engine([Agent(name="a", model="m", tools=[risky])])
    state = await paused_run(engine, call("risky"), fake=fake)

    assert [p.tool for p in state.pending_approvals] == ["risky"]


async def test_cancel_closes_pending_calls(make_engine: EngineFactory, fake: FakeModel) -> None:
    engine = make_engine([Agent(name="a", model="m", tools=[delete_record])])
    state = await paused_run(engine, call("delete_record", {"record_id": "r1"}), fake=fake)

    emitted = engine.cancel(state)

    assert state.status is RunStatus.CANCELLED
    assert state.pending_approvals == []
    assert tool_messages(state) == [
        "Tool call cancelled: the run was cancelled before it finished."
    ]
    assert [e.name for e in emitted] == ["tool_call.completed", "message"]
    with pytest.raises(RunEnded):
        engine.cancel(state)
