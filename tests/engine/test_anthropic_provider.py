"""AnthropicProvider against the fake Messages API, on the real `anthropic` client over HTTP."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator

import pytest

from app import Agent, AnthropicProvider, tool
from app.engine import Completed, Engine, ModelRouter
from app.engine.state import RunState
from app.testing import FakeModel, FakeModelServer, Reply, call, calls, error, text
from tests.engine.conftest import Recorder

pytestmark = pytest.mark.anyio


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


AGENTS = [
    Agent(name="a", model="claude", instructions="Be brief.", tools=[add]),
    Agent(name="one_at_a_time", model="claude", tools=[add], parallel_tool_calls=False),
]


@pytest.fixture
async def provider(fake_server: FakeModelServer) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(base_url=fake_server.url, api_key="k", max_retries=1)
    yield provider
    await provider.aclose()


async def run(provider: AnthropicProvider, agent: str = "a") -> RunState:
    engine = Engine(AGENTS, ModelRouter(provider))
    state = engine.start(agent, "go")
    await engine.run(state)
    return state


async def test_the_request_speaks_the_messages_api(
    provider: AnthropicProvider, fake: FakeModel
) -> None:
    fake.script(
        "claude", [calls(("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})), text("3, 7")]
    )

    state = await run(provider, "one_at_a_time")

    assert state.final_output == "3, 7"
    first, second = fake.requests_for("claude")
    assert first["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert first["tools"][0]["name"] == "add"
    assert first["tools"][0]["input_schema"]["required"] == ["a", "b"]
    assert first["max_tokens"] == 8192
    results = second["messages"][2]
    assert results["role"] == "user"
    assert [block["content"] for block in results["content"]] == ["3", "7"]


async def test_text_streams_and_usage_counts_the_prompt_cache(
    provider: AnthropicProvider, fake: FakeModel
) -> None:
    fake.script("claude", [text("One two three four.")])
    engine = Engine(AGENTS, ModelRouter(provider))
    state, recorder = engine.start("a", "go"), Recorder()

    await engine.run(state, recorder)

    assert [d.text for d in recorder.deltas] == ["One", " two", " three", " four."]
    usage = state.usage
    assert usage.cached_tokens > 0
    assert usage.prompt_tokens > usage.cached_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_thinking_goes_back_with_its_signature_after_a_takeover(
    provider: AnthropicProvider, fake_server: FakeModelServer, fake: FakeModel
) -> None:
    fake.script("claude", [call("add", {"a": 1, "b": 2}, reasoning="Add them."), text("3")])
    first = Engine(AGENTS, ModelRouter(provider))
    state = first.start("a", "go")
    await first.advance(state)
    stored = json.loads(json.dumps(state.to_json()))

    other = AnthropicProvider(base_url=fake_server.url, api_key="k")
    try:
        result = await Engine(AGENTS, ModelRouter(other)).run(RunState.from_json(stored))
    finally:
        await other.aclose()

    assert result.outcome == Completed("3")
    [thinking] = stored["messages"][1]["provider_data"]["thinking"]
    assert thinking["thinking"] == "Add them."
    assert fake.requests_for("claude")[1]["messages"][1]["content"][0] == thinking


async def test_errors_keep_the_servers_words_and_a_cut_answer_fails(
    provider: AnthropicProvider, fake: FakeModel
) -> None:
    fake.script("claude", [error(400, message="prompt is too long")])
    refused = await run(provider)
    fake.script("claude", [Reply(content="The answer is", finish_reason="length")])
    cut = await run(provider)

    assert refused.error is not None
    assert refused.error.message == "model 'claude': the server answered 400: prompt is too long"
    assert cut.error is not None
    assert "model 'claude': the answer was cut at its token limit" in cut.error.message


async def test_an_error_inside_the_stream_keeps_the_servers_words() -> None:
    fake = FakeModel({"claude": [error(529, message="Overloaded")]}, dialect="anthropic-openai")
    with FakeModelServer(fake) as server:
        provider = AnthropicProvider(base_url=server.url, api_key="k", max_retries=0)
        try:
            state = await run(provider)
        finally:
            await provider.aclose()

    assert state.error is not None
    assert state.error.message == "model 'claude': Overloaded"


def test_without_the_sdk_it_imports_and_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)  # as if the extra were not installed
    from app import AnthropicProvider

    with pytest.raises(ImportError, match=r"agent-runs\[anthropic\]"):
        AnthropicProvider(api_key="k")
