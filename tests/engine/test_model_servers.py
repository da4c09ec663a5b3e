"""Every server's dialect against every kind of turn, on the real `openai` client over HTTP;
and Anthropic's Messages API on the real `anthropic` client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from app import Agent, tool
from app.engine import (
    AnthropicProvider,
    Completed,
    Engine,
    ModelProvider,
    ModelRouter,
    OpenAIProvider,
)
from app.engine.state import RunState
from app.testing import DIALECTS, FakeModel, FakeModelServer, Reply, call, calls, text
from tests.engine.conftest import Recorder

pytestmark = pytest.mark.anyio

# What a user puts in MODEL_PROVIDERS for the servers that need more than a base URL.
PROVIDER_SETTINGS: dict[str, dict[str, Any]] = {
    "azure": {"api_key": "k", "api_key_header": "api-key", "query": {"api-version": "2024-02-01"}},
}

order: list[str] = []


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    order.append(f"{a}+{b}")
    return a + b


@tool
def now() -> str:
    """The time."""
    return "noon"


billing = Agent(name="billing", model="m", instructions="You handle billing.", tools=[now])
triage = Agent(name="triage", model="m", tools=[add], handoffs=[billing])
sequential = Agent(name="sequential", model="m", tools=[add], parallel_tool_calls=False)


@pytest.fixture(scope="module", params=[*sorted(DIALECTS), "anthropic"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakeModelServer]]:
    """A fake model in one dialect, or answering Anthropic's Messages API."""
    dialect = "openai" if request.param == "anthropic" else request.param
    with FakeModelServer(FakeModel(dialect=dialect)) as server:
        yield request.param, server


@dataclass
class Rig:
    engine: Engine
    fake: FakeModel

    async def play(self, agent: str, *replies: Reply) -> tuple[RunState, Recorder]:
        self.fake.script("m", list(replies))
        state, recorder = self.engine.start(agent, "go"), Recorder()
        result = await self.engine.run(state, recorder)
        assert isinstance(result.outcome, Completed), state.error
        _assert_valid_history(state)
        return state, recorder

    def assert_usage(self, state: RunState, *, requests: int) -> None:
        assert state.usage.requests == requests
        # Azure's older API versions send usage only to `stream_options`, which they refuse.
        if self.fake.dialect.name != "azure":
            assert state.usage.prompt_tokens > 0
            usage = state.usage
            assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.fixture
async def rig(server: tuple[str, FakeModelServer]) -> AsyncIterator[Rig]:
    name, fake_server = server
    fake_server.fake.reset()
    order.clear()
    provider: ModelProvider
    if name == "anthropic":
        provider = AnthropicProvider(base_url=fake_server.url, api_key="k", max_retries=0)
    else:
        settings = PROVIDER_SETTINGS.get(name, {})
        provider = OpenAIProvider(base_url=fake_server.base_url, max_retries=0, **settings)
    yield Rig(Engine([triage, billing, sequential], ModelRouter(provider)), fake_server.fake)
    await provider.aclose()


async def test_a_text_answer(rig: Rig) -> None:
    state, recorder = await rig.play("triage", text("Hello there, friend."))

    assert state.final_output == "Hello there, friend."
    assert "".join(d.text for d in recorder.deltas) == state.final_output
    rig.assert_usage(state, requests=1)


async def test_one_tool_call(rig: Rig) -> None:
    state, _ = await rig.play(
        "triage", call("add", {"a": 2, "b": 3}, reasoning="I add them."), text("5")
    )

    assert _tool_outputs(state) == ["5"]
    assert state.final_output == "5"
    rig.assert_usage(state, requests=2)


async def test_parallel_calls_stay_apart(rig: Rig) -> None:
    reply = calls(("add", {"a": 1, "b": 2}), ("add", {"a": 30, "b": 4}))
    state, _ = await rig.play("triage", reply, text("3 and 34"))

    [assistant] = [m for m in state.messages if m.get("tool_calls")]
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == ["add", "add"]
    assert _tool_outputs(state) == ["3", "34"]


async def test_a_handoff(rig: Rig) -> None:
    state, _ = await rig.play(
        "triage", calls(("transfer_to_billing", "")), call("now", ""), text("It is noon.")
    )

    assert state.current_agent == "billing"
    assert _tool_outputs(state)[-1] == "noon"
    assert state.final_output == "It is noon."


async def test_a_sequential_agent(rig: Rig) -> None:
    reply = calls(("add", {"a": 1, "b": 1}), ("add", {"a": 2, "b": 2}))
    state, _ = await rig.play("sequential", reply, text("2 and 4"))

    assert order == ["1+1", "2+2"]
    assert _tool_outputs(state) == ["2", "4"]


def _tool_outputs(state: RunState) -> list[str]:
    return [m["content"] for m in state.messages if m["role"] == "tool"]


def _assert_valid_history(state: RunState) -> None:
    """What strict servers ask of a stored conversation: distinct ids, JSON-object arguments."""
    ids = [c["id"] for m in state.messages for c in m.get("tool_calls") or ()]
    assert len(set(ids)) == len(ids)
    for message in state.messages:
        for tool_call in message.get("tool_calls") or ():
            assert isinstance(json.loads(tool_call["function"]["arguments"]), dict)
