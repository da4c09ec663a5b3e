"""Tools the client runs, and outputs a person supplies, in the engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app import Agent, tool
from app.engine import DecisionInput, Engine, Paused, RunState, RunStatus
from app.engine.errors import InvalidDecision, ToolClash
from app.engine.external import parameters_problems
from app.engine.state import RunTool
from app.testing import FakeModel, call, calls, text
from tests.engine.conftest import EngineFactory

pytestmark = pytest.mark.anyio

executed: list[str] = []


@tool(needs_approval=True)
def delete_record(record_id: str) -> str:
    """Delete a record."""
    executed.append(record_id)
    return f"deleted {record_id}"


@tool(external=True)
def take_photo(subject: str) -> str:
    """Take a photo with the user's camera."""
    raise AssertionError("an external tool's body is never run")


WEATHER = RunTool(
    name="get_weather",
    description="The weather where the user is.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


@pytest.fixture(autouse=True)
def _clear_executed() -> None:
    executed.clear()


def roundtrip(state: RunState) -> RunState:
    return RunState.from_json(json.loads(json.dumps(state.to_json())))


def tool_messages(state: RunState) -> list[str]:
    return [m["content"] for m in state.messages if m["role"] == "tool"]


async def parked(engine: Engine, *replies: Any, fake: FakeModel, **start: Any) -> RunState:
    fake.script("m", list(replies))
    state = engine.start("a", "go", **start)
    result = await engine.run(state)
    assert isinstance(result.outcome, Paused), result.outcome
    return roundtrip(state)


async def test_a_person_supplies_the_output_and_the_tool_is_not_run(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    engine = make_engine([Agent(name="a", model="m", tools=[delete_record])])
    state = await parked(engine, call("delete_record", {"record_id": "r1"}), text("ok"), fake=fake)
    [pending] = state.pending_approvals
    assert pending.kind == "approval"

    emitted = engine.decide(state, [DecisionInput(pending.call_id, True, output="deleted by hand")])
    await engine.run(state)

    assert executed == []
    assert state.status is RunStatus.COMPLETED
    assert tool_messages(state) == ["deleted by hand"]
    assert state.decisions[0].output == "deleted by hand"
    completed = [e.data for e in emitted if e.name == "tool_call.completed"]
    assert completed == [
        {
            "call_id": pending.call_id,
            "name": "delete_record",
            "output": "deleted by hand",
            "status": "completed",
        }
    ]


async def test_a_decorated_external_tool_parks_until_the_client_answers(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    agent = Agent(name="a", model="m", tools=[take_photo], approval_handler=lambda r, c: True)
    engine = make_engine([agent])
    state = await parked(engine, call("take_photo", {"subject": "cat"}), text("nice"), fake=fake)
    [pending] = state.pending_approvals
    assert (pending.kind, pending.arguments) == ("external", {"subject": "cat"})

    engine.decide(state, [DecisionInput(pending.call_id, True, output="photo_1.jpg")])
    await engine.run(state)

    assert state.status is RunStatus.COMPLETED
    assert tool_messages(state) == ["photo_1.jpg"]


async def test_a_run_tool_is_offered_by_every_agent_and_answered_in_parts(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    b = Agent(name="b", model="m")
    engine = make_engine([Agent(name="a", model="m", handoffs=[b]), b])
    state = await parked(
        engine,
        call("transfer_to_b", {}),
        calls(("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Rome"})),
        text("cold and warm"),
        fake=fake,
        tools=[WEATHER],
    )
    offered = [
        [t["function"]["name"] for t in body.get("tools", [])] for body in fake.requests_for("m")
    ]
    assert offered == [["transfer_to_b", "get_weather"], ["get_weather"]]
    assert offered_parameters(fake) == WEATHER.parameters
    oslo, rome = state.pending_approvals
    assert {oslo.kind, rome.kind} == {"external"}

    engine.decide(state, [DecisionInput(oslo.call_id, True, output="-3 C")])
    assert state.status is RunStatus.PENDING_APPROVAL
    state = roundtrip(state)
    assert [p.call_id for p in state.pending_approvals] == [rome.call_id]
    engine.decide(state, [DecisionInput(rome.call_id, True, output="24 C")])
    await engine.run(state)

    assert state.status is RunStatus.COMPLETED
    assert tool_messages(state)[-2:] == ["-3 C", "24 C"]


def offered_parameters(fake: FakeModel) -> Any:
    return fake.requests_for("m")[-1]["tools"][0]["function"]["parameters"]


async def test_decisions_that_do_not_fit_an_external_call(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    engine = make_engine([Agent(name="a", model="m")])
    state = await parked(
        engine, call("get_weather", {"city": "Oslo"}), text("ok"), fake=fake, tools=[WEATHER]
    )
    [pending] = state.pending_approvals
    before = state.to_json()

    for decision in (
        DecisionInput(pending.call_id, True),
        DecisionInput(pending.call_id, True, output="1 C", arguments={"city": "Rome"}),
        DecisionInput(pending.call_id, True, output="1 C", remember=True),
        DecisionInput(pending.call_id, False, output="1 C"),
    ):
        with pytest.raises(InvalidDecision):
            engine.decide(state, [decision])
    assert state.to_json() == before

    engine.decide(state, [DecisionInput(pending.call_id, False, reason="no location access")])
    await engine.run(state)
    assert state.status is RunStatus.COMPLETED
    assert "no location access" in tool_messages(state)[0]
    assert state.steps[0].tool_calls[0].status == "rejected"


async def test_a_long_output_is_cut_like_a_tool_result(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    models = make_engine([]).models
    engine = Engine([Agent(name="a", model="m")], models, max_tool_output_bytes=10)
    state = await parked(
        engine, call("get_weather", {"city": "Oslo"}), text("ok"), fake=fake, tools=[WEATHER]
    )
    [pending] = state.pending_approvals

    engine.decide(state, [DecisionInput(pending.call_id, True, output="x" * 50)])

    [the_call] = state.steps[0].tool_calls
    assert the_call.truncated
    assert the_call.output is not None
    assert the_call.output.startswith("x" * 10 + "\n[output truncated")
    assert state.decisions[0].output == the_call.output


async def test_run_tools_may_not_take_an_agents_tool_name(make_engine: EngineFactory) -> None:
    engine = make_engine([Agent(name="a", model="m", tools=[delete_record])])
    clash = RunTool("delete_record", "", {"type": "object"})
    handoff = RunTool("transfer_to_a", "", {"type": "object"})

    with pytest.raises(ToolClash, match="delete_record"):
        engine.check_run_tools([WEATHER, clash])
    with pytest.raises(ToolClash, match="transfer_to_a"):
        engine.check_run_tools([handoff])
    engine.check_run_tools([WEATHER])


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ([], "JSON Schema object"),
        ({"type": "string"}, '"type": "object"'),
        ({"type": "object", "properties": []}, "parameters.properties"),
        ({"type": "object", "properties": {"a": {"type": "text"}}}, "parameters.properties.a"),
        ({"type": "object", "required": ["a", "a"]}, "parameters.required"),
        ({"type": "object", "properties": {"a": {"items": 3}}}, "parameters.properties.a.items"),
        ({"type": "object", "anyOf": []}, "parameters.anyOf"),
    ],
)
def test_invalid_parameters_are_named(schema: Any, problem: str) -> None:
    [found] = parameters_problems(schema)
    assert problem in found


def test_valid_parameters_pass() -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": ["string", "null"], "enum": ["Oslo", None]},
            "days": {"type": "array", "items": {"type": "integer"}},
            "unit": {"anyOf": [{"const": "C"}, {"const": "F"}]},
        },
        "required": ["city"],
        "additionalProperties": False,
    }
    assert parameters_problems(schema) == []


def test_an_external_tool_takes_no_approval_rule() -> None:
    with pytest.raises(ValueError, match="needs_approval"):

        @tool(external=True, needs_approval=True)
        def photo() -> str:
            """Take a photo."""
            return ""
