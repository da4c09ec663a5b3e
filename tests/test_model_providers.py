"""MODEL_PROVIDERS entries reach their servers as configured: headers, query, key, options."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from app import Agent
from app.engine import Completed
from app.runtime.agents import AgentsModule, build_engine
from app.settings import Settings
from app.testing import FakeModel, FakeModelServer, call, text

pytestmark = pytest.mark.anyio


@pytest.fixture
def azure() -> Iterator[FakeModelServer]:
    with FakeModelServer(FakeModel({"gpt": [text("from azure")]}, dialect="azure")) as server:
        yield server


@pytest.fixture
def mistral() -> Iterator[FakeModelServer]:
    with FakeModelServer(FakeModel({"small": [text("from mistral")]}, dialect="mistral")) as server:
        yield server


async def test_entries_carry_headers_query_key_header_and_options(
    azure: FakeModelServer, mistral: FakeModelServer
) -> None:
    providers = {
        "azure": {
            "base_url": azure.base_url,
            "api_key": "secret",
            "api_key_header": "api-key",
            "query": {"api-version": "2024-02-01"},
        },
        "mistral": {
            "base_url": mistral.base_url,
            "options": {"stream_options": False},
            "body": {"reasoning_effort": "low"},
        },
    }
    settings = Settings(model_providers=json.loads(json.dumps(providers)))
    agents = [Agent(name="a", model="azure/gpt"), Agent(name="b", model="mistral/small")]
    engine = build_engine(settings, AgentsModule(agents))

    try:
        first = await engine.run(engine.start("a", "hi"))
        second = await engine.run(engine.start("b", "hi"))
    finally:
        await engine.models.aclose()

    assert first.outcome == Completed("from azure")
    assert second.outcome == Completed("from mistral")
    assert all("stream_options" not in body for body in mistral.fake.requests)  # never asked
    assert [body["reasoning_effort"] for body in mistral.fake.requests] == ["low"]


def test_an_unknown_option_is_refused_at_start() -> None:
    with pytest.raises(pydantic.ValidationError, match="stream_opts"):
        Settings(model_providers={"x": {"base_url": "http://h", "options": {"stream_opts": False}}})


async def test_an_anthropic_entry_speaks_the_messages_api() -> None:
    fake = FakeModel({"claude-x": [text("from claude")]})
    with FakeModelServer(fake) as server:
        thinking = {"type": "enabled", "budget_tokens": 1024}
        entry = {
            "kind": "anthropic",
            "api_key": "k",
            "base_url": server.url,
            "body": {"thinking": thinking},
        }
        settings = Settings(model_providers={"anthropic": entry})
        engine = build_engine(settings, AgentsModule([Agent(name="a", model="anthropic/claude-x")]))
        try:
            result = await engine.run(engine.start("a", "hi"))
        finally:
            await engine.models.aclose()

    assert result.outcome == Completed("from claude")
    assert fake.requests[0]["max_tokens"] == 8192  # the Messages API needs one
    assert fake.requests[0]["thinking"] == thinking


def test_options_are_for_openai_compatible_servers() -> None:
    entry = {"kind": "anthropic", "options": {"stream_options": False}}
    with pytest.raises(pydantic.ValidationError, match="OpenAI-compatible"):
        Settings(model_providers={"anthropic": entry})


def test_a_refused_entry_is_not_printed_back() -> None:
    entry = {"kind": "anthropic", "api_key_header": "x-key", "api_key": "sk-ant-1"}
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings(model_providers={"a": entry})

    assert "sk-ant-1" not in str(refused.value)


@pytest.mark.parametrize(
    ("entry", "asked_by_tool"),
    [
        ({"structured_output": "tool"}, True),
        ({}, False),
        ({"kind": "anthropic", "api_key": "k"}, True),  # every Claude model takes tools
        ({"kind": "anthropic", "api_key": "k", "structured_output": "response_format"}, False),
    ],
    ids=["openai-tool", "openai-default", "anthropic-default", "anthropic-response-format"],
)
async def test_an_entry_says_how_structured_output_is_asked(
    entry: dict[str, Any], asked_by_tool: bool
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    reply = call("final_output", {"n": 1}) if asked_by_tool else text('{"n": 1}')
    fake = FakeModel({"x": [reply]})
    with FakeModelServer(fake) as server:
        base_url = server.url if entry.get("kind") == "anthropic" else server.base_url
        settings = Settings(model_providers={"p": {**entry, "base_url": base_url}})
        engine = build_engine(
            settings, AgentsModule([Agent(name="a", model="p/x", output_type=schema)])
        )
        try:
            state = engine.start("a", "hi")
            await engine.run(state)
        finally:
            await engine.models.aclose()

    assert state.final_output == {"n": 1}
    sent = fake.requests[0]
    tools = [t.get("name") or t["function"]["name"] for t in sent.get("tools", [])]
    assert ("final_output" in tools) is asked_by_tool
    assert ("response_format" in sent or "output_config" in sent) is not asked_by_tool
