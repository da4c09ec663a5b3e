"""Structured output in the loop: asked by `response_format` or a `final_output` tool, validated,
repaired with the errors, `output_invalid` once the repairs run out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from app import Agent, tool
from app.engine import Completed, Engine, Failed, ModelRouter, OpenAIProvider, RunConfig, RunStatus
from app.engine.output import InvalidSchema, output_spec, schema_spec
from app.engine.state import RunState
from app.testing import Dialect, FakeModel, FakeModelServer, call, calls, text
from app.testing.script import Rule, Script
from tests.engine.conftest import EngineFactory, Recorder

pytestmark = pytest.mark.anyio


class Weather(BaseModel):
    city: str
    celsius: float


@dataclass
class Point:
    x: int
    y: int


SUM_SCHEMA: dict[str, Any] = {
    "title": "Sum",
    "type": "object",
    "properties": {"total": {"type": "integer"}},
    "required": ["total"],
    "additionalProperties": False,
}


@tool
def lookup(city: str) -> str:
    """Look a city up."""
    return f"{city}: 21 degrees"


def repairing(first: Any, *, then: Any) -> Script:
    """A script whose first answer is `first` and whose answer to a repair is `then`."""
    return Script(rules=[Rule(match="did not validate", replies=[then]), Rule(replies=[first])])


@pytest.mark.parametrize(
    ("output_type", "answer", "value"),
    [
        (Weather, '{"city": "Oslo", "celsius": 4.5}', {"city": "Oslo", "celsius": 4.5}),
        (Point, '{"x": 1, "y": 2}', {"x": 1, "y": 2}),
        (SUM_SCHEMA, '{"total": 3}', {"total": 3}),
    ],
    ids=["pydantic", "dataclass", "schema"],
)
async def test_output_types_ask_with_response_format_and_store_the_value(
    make_engine: EngineFactory, fake: FakeModel, output_type: Any, answer: str, value: Any
) -> None:
    fake.script("m", [text(answer)])
    agent = Agent(name="a", model="m", output_type=output_type)
    engine = make_engine([agent])
    state = engine.start("a", "Go")

    result = await engine.run(state)

    assert result.outcome == Completed(value)
    assert (state.status, state.final_output) == (RunStatus.COMPLETED, value)
    sent = fake.requests_for("m")[0]["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"] == output_spec(output_type).schema
    assert sent["json_schema"]["name"] == getattr(output_type, "__name__", "Sum")
    assert RunState.from_json(json.loads(json.dumps(state.to_json()))).final_output == value


async def test_a_text_agent_sends_no_response_format(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("m", [text("plain")])
    engine = make_engine([Agent(name="a", model="m")])
    await engine.run(engine.start("a", "Go"))
    assert "response_format" not in fake.requests_for("m")[0]


async def test_a_repair_sends_the_errors_and_takes_the_fixed_answer(
    make_engine: EngineFactory, fake: FakeModel, recorder: Recorder
) -> None:
    fake.script("m", repairing(text('{"total": "three"}'), then=text('{"total": 3}')))
    engine = make_engine([Agent(name="a", model="m", output_type=SUM_SCHEMA)])
    state = engine.start("a", "Add")

    await engine.run(state, recorder)

    assert (state.status, state.final_output, state.output_repairs) == (
        RunStatus.COMPLETED,
        {"total": 3},
        1,
    )
    repair = fake.requests_for("m")[1]["messages"][-1]
    assert repair["role"] == "user"
    assert "total" in repair["content"]
    assert "integer" in repair["content"]
    assert json.dumps(SUM_SCHEMA) in repair["content"]  # a server that ignored it sees it now
    assert state.messages[-2] == repair


async def test_answers_that_never_validate_fail_with_output_invalid(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("m", [text("not json at all")])
    engine = make_engine([Agent(name="a", model="m", output_type=Weather)])
    state = engine.start("a", "Go", config=RunConfig(output_retries=1))

    result = await engine.run(state)

    assert isinstance(result.outcome, Failed)
    assert state.error is not None
    assert state.error.code == "output_invalid"
    assert "not JSON" in state.error.message
    assert len(fake.requests_for("m")) == 2  # the answer and one repair
    assert state.final_output is None


async def test_no_retries_fails_at_the_first_invalid_answer(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("m", [text('{"city": "Oslo"}')])
    engine = make_engine([Agent(name="a", model="m", output_type=Weather)])
    state = engine.start("a", "Go", config=RunConfig(output_retries=0))
    await engine.run(state)
    assert state.error is not None
    assert "celsius" in state.error.message
    assert len(fake.requests_for("m")) == 1


async def test_tools_run_before_the_structured_answer(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("m", [call("lookup", {"city": "Oslo"}), text('{"city": "Oslo", "celsius": 21}')])
    engine = make_engine([Agent(name="a", model="m", tools=[lookup], output_type=Weather)])
    state = engine.start("a", "Weather?")
    await engine.run(state)
    assert state.final_output == {"city": "Oslo", "celsius": 21.0}


async def test_the_tool_mechanism_offers_final_output_and_repairs_through_its_result(
    make_engine: EngineFactory, fake: FakeModel, fake_server: Any, recorder: Recorder
) -> None:
    tool_provider = OpenAIProvider(base_url=fake_server.base_url, structured_output="tool")
    fake.script(
        "m",
        [
            calls(("final_output", {"total": "x"}), ("lookup", {"city": "Oslo"})),
            call("final_output", {"total": 7}),
        ],
    )
    agent = Agent(name="a", model="tools/m", tools=[lookup], output_type=SUM_SCHEMA)
    engine = make_engine([agent], {"tools": tool_provider})
    state = engine.start("a", "Go")

    await engine.run(state, recorder)
    await tool_provider.aclose()

    assert (state.status, state.final_output, state.output_repairs) == (
        RunStatus.COMPLETED,
        {"total": 7},
        1,
    )
    first = fake.requests_for("m")[0]
    assert "response_format" not in first
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert offered["final_output"]["parameters"] == SUM_SCHEMA
    outputs = [c.output for c in state.steps[0].tool_calls]
    assert "did not validate" in (outputs[0] or "")
    assert "Not run" in (outputs[1] or "")
    # Every call got its result: the conversation stays valid for a model (and a session).
    assert [m["role"] for m in state.messages] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "tool",
    ]
    names = [e.name for e in recorder.events]
    assert names.count("tool_call.completed") == 3


async def test_the_tool_mechanism_wraps_a_schema_that_is_not_an_object(
    make_engine: EngineFactory, fake: FakeModel, fake_server: Any
) -> None:
    tool_provider = OpenAIProvider(base_url=fake_server.base_url, structured_output="tool")
    fake.script("m", [call("final_output", {"response": ["a", "b"]})])
    schema = {"type": "array", "items": {"type": "string"}}
    engine = make_engine([Agent(name="a", model="t/m", output_type=schema)], {"t": tool_provider})
    state = engine.start("a", "List")
    await engine.run(state)
    await tool_provider.aclose()
    assert state.final_output == ["a", "b"]
    parameters = fake.requests_for("m")[0]["tools"][0]["function"]["parameters"]
    assert parameters["properties"]["response"] == schema


async def test_after_a_handoff_the_final_agent_s_type_decides(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("triage", [call("transfer_to_weather")])
    # The fake picks by the assistant messages since the user's: triage's handoff is the first.
    fake.script("w", [text("unused"), text('{"city": "Bergen", "celsius": 9}')])
    weather = Agent(name="weather", model="w", output_type=Weather)
    triage = Agent(name="triage", model="triage", handoffs=[weather])
    engine = make_engine([triage, weather])
    state = engine.start("triage", "Weather in Bergen?")

    await engine.run(state)

    assert state.final_output == {"city": "Bergen", "celsius": 9.0}
    assert "response_format" not in fake.requests_for("triage")[0]
    assert "response_format" in fake.requests_for("w")[0]


async def test_a_run_s_own_schema_wins_over_the_agent_s_type(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("m", [text('{"total": 5}')])
    engine = make_engine([Agent(name="a", model="m", output_type=Weather)])
    state = engine.start("a", "Go", output_schema=SUM_SCHEMA)
    await engine.run(state)
    assert state.final_output == {"total": 5}
    assert fake.requests_for("m")[0]["response_format"]["json_schema"]["schema"] == SUM_SCHEMA


async def test_a_restored_state_repairs_with_the_same_count(
    make_engine: EngineFactory, fake: FakeModel, recorder: Recorder
) -> None:
    """A takeover mid-repair: the state checkpointed after the first invalid answer goes on in
    a new engine with the count it had."""
    fake.script("m", [text('{"total": "x"}')])
    agent = Agent(name="a", model="m", output_type=SUM_SCHEMA)
    engine = make_engine([agent])
    state = engine.start("a", "Go", config=RunConfig(output_retries=2))
    await engine.advance(state, recorder)
    saved = recorder.checkpoints[-1][0]
    assert saved["output_repairs"] == 1

    restored = RunState.from_json(saved)
    await make_engine([agent]).run(restored)

    assert restored.error is not None
    assert restored.error.code == "output_invalid"
    assert len(fake.requests_for("m")) == 3  # the first answer, then two repairs, not three


def test_an_invalid_schema_is_refused() -> None:
    with pytest.raises(InvalidSchema):
        schema_spec({"type": "objectish"})
    with pytest.raises(InvalidSchema):
        schema_spec({"$ref": "https://example.com/schema.json"})  # never fetched
    with pytest.raises(TypeError):
        Agent(name="a", output_type=int)


def test_an_agent_s_bad_schema_fails_where_it_is_defined() -> None:
    with pytest.raises(InvalidSchema):
        Agent(name="a", output_type={"type": 5})


def test_nan_is_not_a_json_answer() -> None:
    spec = schema_spec({"type": "number"})
    with pytest.raises(ValueError, match="not JSON"):
        spec.validate_text("NaN")
    assert spec.validate_text("```json\n4.5\n```") == 4.5


async def test_a_server_that_refuses_response_format_is_asked_without_it_and_repaired() -> None:
    """The answer is validated either way; the repair names the schema the server never saw."""
    fake = FakeModel(
        {"m": repairing(text("Three."), then=text('{"total": 3}'))},
        dialect=Dialect("no-json", refuses=("response_format",)),
    )
    with FakeModelServer(fake) as server:
        provider = OpenAIProvider(base_url=server.base_url, max_retries=0)
        engine = Engine([Agent(name="a", model="m", output_type=SUM_SCHEMA)], ModelRouter(provider))
        state = engine.start("a", "Add")
        await engine.run(state)
        await provider.aclose()

    assert state.final_output == {"total": 3}
    assert ["response_format" in body for body in fake.requests] == [True, False, False]
