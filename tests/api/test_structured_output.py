"""Structured output through the API: `final_output` is the validated JSON value in the run,
its `run.completed` event and its listing; a run's `output_schema`; `GET /agents`; repairs,
`output_invalid`, handoffs, sessions and a run resumed mid-repair by another process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from app.settings import ProviderSettings, Settings
from app.testing import FakeModel, call, text
from app.testing.script import Rule, Script
from tests.api.conftest import Client, ClientFactory, client_factory, rested
from tests.api.structured_agents import SUM_SCHEMA

pytestmark = pytest.mark.anyio


@pytest.fixture
def make_structured(settings: Settings, fake_server: Any) -> ClientFactory:
    # A server configured for the tool mechanism: the same fake, by another provider name.
    providers = {"tools": ProviderSettings(base_url=fake_server.base_url, structured_output="tool")}
    return client_factory(settings, "tests.api.structured_agents", model_providers=providers)


@pytest.fixture
async def client(make_structured: ClientFactory) -> AsyncIterator[Client]:
    async with make_structured() as client:
        yield client


def repairing(first: Any, *, then: Any) -> Script:
    """A script whose first answer is `first`, and whose answer to a repair is `then`."""
    return Script(rules=[Rule(match="did not validate", replies=[then]), Rule(replies=[first])])


async def run_to_rest(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    created = await client.post("/runs", json=body)
    assert created.status_code == 201, created.text
    return await rested(client, created.json()["id"])


async def completed_event(client: Client, run_id: str) -> dict[str, Any]:
    """The `run.completed` event's data, from the stream of the ended run."""
    response = await client.get(f"/runs/{run_id}/events")
    lines = response.text.splitlines()
    at = lines.index("event: run.completed")
    data: dict[str, Any] = json.loads(lines[at + 1].removeprefix("data: "))
    return data


@pytest.mark.parametrize(
    ("agent", "model", "answer", "value"),
    [
        ("weather", "w", {"city": "Oslo", "celsius": 4.5}, {"city": "Oslo", "celsius": 4.5}),
        ("point", "p", {"x": 1, "y": 2}, {"x": 1, "y": 2}),
        ("summer", "s", {"total": 3}, {"total": 3}),
    ],
    ids=["pydantic", "dataclass", "schema"],
)
async def test_the_final_output_is_the_validated_value_everywhere(
    client: Client, fake: FakeModel, agent: str, model: str, answer: Any, value: Any
) -> None:
    fake.script(model, [text(json.dumps(answer))])

    run = await run_to_rest(client, {"agent": agent, "input": "Go"})

    assert (run["status"], run["final_output"], run["output_schema"]) == ("completed", value, None)
    sent = fake.requests_for(model)[0]["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"]["type"] == "object"
    assert (await completed_event(client, run["id"]))["final_output"] == value
    listed = (await client.get("/runs", params={"agent": agent})).json()["items"][0]
    assert listed["final_output"] == value


async def test_a_text_run_s_completed_event_carries_its_text(
    client: Client, fake: FakeModel
) -> None:
    fake.script("m", [text("hello")])
    run = await run_to_rest(client, {"agent": "plain", "input": "Hi"})
    assert run["final_output"] == "hello"
    assert (await completed_event(client, run["id"]))["final_output"] == "hello"


async def test_a_run_s_own_output_schema(client: Client, fake: FakeModel) -> None:
    fake.script("m", [text('["a", "b"]')])
    schema = {"type": "array", "items": {"type": "string"}}

    run = await run_to_rest(client, {"agent": "plain", "input": "List", "output_schema": schema})

    assert (run["final_output"], run["output_schema"]) == (["a", "b"], schema)
    assert fake.requests_for("m")[0]["response_format"]["json_schema"]["schema"] == schema


@pytest.mark.parametrize(
    "schema",
    [{"type": "objectish"}, {"$ref": "https://example.com/s.json"}, {"minimum": "zero"}],
)
async def test_an_invalid_output_schema_is_422(client: Client, schema: Any) -> None:
    response = await client.post(
        "/runs", json={"agent": "plain", "input": "x", "output_schema": schema}
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "/problems/validation-error"
    assert problem["errors"][0]["loc"][-1] == "output_schema"
    assert "not a valid JSON Schema" in problem["errors"][0]["msg"]


@pytest.mark.parametrize("retries", [-1, 11, "two"])
async def test_bad_output_retries_are_422(client: Client, retries: Any) -> None:
    response = await client.post(
        "/runs", json={"agent": "plain", "input": "x", "config": {"output_retries": retries}}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][-1] == "output_retries"


async def test_agents_show_their_output_schema(client: Client) -> None:
    agents = {a["name"]: a for a in (await client.get("/agents")).json()["items"]}
    assert agents["summer"]["output_schema"] == SUM_SCHEMA
    assert agents["weather"]["output_schema"]["properties"]["celsius"]["type"] == "number"
    assert agents["point"]["output_schema"]["required"] == ["x", "y"]
    assert agents["plain"]["output_schema"] is None
    one = (await client.get("/agents/summer")).json()
    assert one["output_schema"] == SUM_SCHEMA


async def test_a_repair_that_succeeds(client: Client, fake: FakeModel) -> None:
    fake.script("s", repairing(text('{"total": "3"}'), then=text('{"total": 3}')))

    run = await run_to_rest(client, {"agent": "summer", "input": "Add"})

    assert (run["status"], run["final_output"]) == ("completed", {"total": 3})
    repair = run["messages"][-2]
    assert repair["role"] == "user"
    assert "did not validate" in repair["content"]
    assert "total" in repair["content"]


async def test_retries_exhausted_fail_with_output_invalid(client: Client, fake: FakeModel) -> None:
    fake.script("s", [text("three")])

    run = await run_to_rest(
        client, {"agent": "summer", "input": "Add", "config": {"output_retries": 1}}
    )

    assert run["status"] == "failed"
    assert run["error"]["code"] == "output_invalid"
    assert run["final_output"] is None
    assert len(fake.requests_for("s")) == 2


async def test_the_tool_mechanism_for_a_provider_that_says_so(
    client: Client, fake: FakeModel
) -> None:
    fake.script("tm", [call("final_output", {"total": "x"}), call("final_output", {"total": 9})])

    run = await run_to_rest(client, {"agent": "tooled", "input": "Add"})

    assert (run["status"], run["final_output"]) == ("completed", {"total": 9})
    first = fake.requests_for("tm")[0]
    assert "response_format" not in first
    assert first["tools"][0]["function"]["name"] == "final_output"
    assert first["tools"][0]["function"]["parameters"] == SUM_SCHEMA
    statuses = [c["status"] for step in run["steps"] for c in step["tool_calls"]]
    assert statuses == ["failed", "completed"]


async def test_after_a_handoff_the_final_agent_s_type_decides(
    client: Client, fake: FakeModel
) -> None:
    fake.script("t", [call("transfer_to_weather")])
    # The fake picks by the assistant messages since the user's: triage's handoff is the first.
    fake.script("w", [text("unused"), text('{"city": "Bergen", "celsius": 9}')])

    run = await run_to_rest(client, {"agent": "triage", "input": "Weather in Bergen?"})

    assert (run["current_agent"], run["final_output"]) == (
        "weather",
        {"city": "Bergen", "celsius": 9.0},
    )
    assert "response_format" not in fake.requests_for("t")[0]


async def test_structured_runs_in_a_session(client: Client, fake: FakeModel) -> None:
    fake.script(
        "s",
        Script(
            rules=[
                Rule(match="^One", replies=[text('{"total": 1}')]),
                Rule(match="did not validate", replies=[text('{"total": 2}')]),
                Rule(match="^Two", replies=[text("two")]),
            ]
        ),
    )
    body = {"agent": "summer", "session_id": "s-structured"}

    first = await run_to_rest(client, {**body, "input": "One"})
    second = await run_to_rest(client, {**body, "input": "Two"})

    assert (first["final_output"], second["final_output"]) == ({"total": 1}, {"total": 2})
    session = (await client.get("/sessions/s-structured")).json()
    contents = [m.get("content") for m in session["messages"]]
    assert contents[:2] == ["One", '{"total": 1}']
    assert contents[-1] == '{"total": 2}'
    assert "did not validate" in contents[-2]
    # The second run's model saw the first's whole exchange.
    assert fake.requests_for("s")[1]["messages"][:2] == session["messages"][:2]


async def test_a_run_resumed_mid_repair_keeps_its_repair_count(
    make_structured: ClientFactory, fake: FakeModel
) -> None:
    """The repair is in the stored state: another process that resumes the run asks the model
    again and counts the repair already spent (one retry allowed: no third request)."""
    fake.script("s", repairing(text("bad"), then=text("still bad", delay=30)))
    body = {"agent": "summer", "input": "Add", "config": {"output_retries": 1}}
    async with make_structured() as client:
        run = (await client.post("/runs", json=body)).json()
        assert await anyio.to_thread.run_sync(fake.wait_for_requests, 2, "s")
    # That process stopped while the repair was in flight; another resumes the run.
    fake.script("s", repairing(text("bad"), then=text("still bad")))
    async with make_structured() as client:
        finished = await rested(client, run["id"])

    assert finished["status"] == "failed"
    assert finished["error"]["code"] == "output_invalid"
    assert "2 tries" in finished["error"]["message"]
    assert len(fake.requests_for("s")) == 3  # the answer, the repair, the repair asked again
    users = [m for m in finished["messages"] if m["role"] == "user"]
    assert len(users) == 2  # the input and one repair: resuming added none


async def test_a_run_resumed_mid_repair_completes(
    make_structured: ClientFactory, fake: FakeModel
) -> None:
    fake.script("s", repairing(text("bad"), then=text('{"total": 4}', delay=30)))
    async with make_structured() as client:
        run = (await client.post("/runs", json={"agent": "summer", "input": "Add"})).json()
        assert await anyio.to_thread.run_sync(fake.wait_for_requests, 2, "s")
    fake.script("s", repairing(text("bad"), then=text('{"total": 4}')))
    async with make_structured() as client:
        finished = await rested(client, run["id"])

    assert (finished["status"], finished["final_output"]) == ("completed", {"total": 4})
