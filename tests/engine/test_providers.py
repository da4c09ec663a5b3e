"""Model providers: streaming, the router, and a backend of one's own.

The tests that drive an engine run on both built-in providers: the OpenAI-compatible one and
Anthropic's, each against the fake model over HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from app import Agent, AnthropicProvider, ModelProvider, ModelRequest, ModelResponse, Usage, tool
from app.engine import Completed, Failed, ModelError, ModelRouter, OpenAIProvider
from app.engine.model import TextSink
from app.testing import FakeModel, FakeModelServer, Reply, calls, text
from tests.engine.conftest import EngineFactory, Recorder

pytestmark = pytest.mark.anyio


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture(params=["openai", "anthropic"])
async def provider(
    request: pytest.FixtureRequest, fake_server: FakeModelServer
) -> AsyncIterator[ModelProvider]:
    provider: ModelProvider
    if request.param == "anthropic":
        provider = AnthropicProvider(base_url=fake_server.url, api_key="x", timeout_seconds=10)
    else:
        provider = OpenAIProvider(base_url=fake_server.base_url, timeout_seconds=10)
    yield provider
    await provider.aclose()


class EchoProvider(ModelProvider):
    """A backend that is not OpenAI-compatible at all: it answers in-process."""

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []

    async def complete(
        self, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelResponse:
        self.requests.append(request)
        answer = f"{request.model} heard: {request.messages[-1]['content']}"
        if on_text is not None:
            await on_text(answer)
        return ModelResponse({"role": "assistant", "content": answer}, Usage(1, 2, 3, 5))


class CrashingProvider(ModelProvider):
    async def complete(
        self, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelResponse:
        raise KeyError("bug in my provider")


async def test_deltas_arrive_as_generated_and_join_to_the_message(
    make_engine: EngineFactory, fake: FakeModel, recorder: Recorder
) -> None:
    answer = "The quick brown fox jumps over the lazy dog."
    fake.script("m", [calls(("add", {"a": 1, "b": 2})), Reply(content=answer, chunk_delay=0.01)])
    engine = make_engine([Agent(name="a", model="m", tools=[add])])
    state = engine.start("a", "go")

    await engine.run(state, recorder)

    assert len(recorder.deltas) > 5
    assert {d.turn for d in recorder.deltas} == {2}
    assert "".join(d.text for d in recorder.deltas) == answer == state.final_output


async def test_streamed_message_equals_the_non_streamed_one(
    fake_server: FakeModelServer, fake: FakeModel
) -> None:
    reply = Reply(
        content="Checking both.",
        tool_calls=calls(("add", {"a": 1, "b": 2}), ("add", {"a": 10, "b": 20})).tool_calls,
    )
    fake.script("m", [reply])
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "sum"}]
    client = openai.AsyncOpenAI(base_url=fake_server.base_url, api_key="x")
    whole = await client.chat.completions.create(model="m", messages=messages)
    await client.close()
    provider = OpenAIProvider(base_url=fake_server.base_url)

    streamed = await provider.complete(
        ModelRequest(model="m", messages=[dict(m) for m in messages])
    )
    await provider.aclose()

    expected = whole.choices[0].message.model_dump(exclude_none=True, exclude={"refusal"})
    assert streamed.message == {**expected, "role": "assistant"}
    assert whole.usage is not None
    assert streamed.usage == Usage(
        1, whole.usage.prompt_tokens, whole.usage.completion_tokens, whole.usage.total_tokens
    )


async def test_a_provider_registered_from_python_is_reached_by_name(
    make_engine: EngineFactory, recorder: Recorder
) -> None:
    echo = EchoProvider()
    engine = make_engine([Agent(name="a", model="mine/echo-1")], providers={"mine": echo})
    state = engine.start("a", "ping")

    result = await engine.run(state, recorder)

    assert result.outcome == Completed("echo-1 heard: ping")
    assert echo.requests[0].model == "echo-1"
    assert [d.text for d in recorder.deltas] == ["echo-1 heard: ping"]
    assert state.usage == Usage(1, 2, 3, 5)


async def test_a_provider_that_crashes_fails_the_run_with_model_error(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine([Agent(name="a", model="bad/x")], providers={"bad": CrashingProvider()})
    state = engine.start("a", "ping")

    result = await engine.run(state)

    assert isinstance(result.outcome, Failed)
    assert result.outcome.error.code == "model_error"
    assert "KeyError" in result.outcome.error.message


def test_router_routes_by_prefix_and_default_model() -> None:
    default, other = EchoProvider(), EchoProvider()
    router = ModelRouter(default, {"other": other}, default_model="base-model")

    assert router.resolve("gpt-4o-mini") == (default, "gpt-4o-mini")
    assert router.resolve("other/llama/3") == (other, "llama/3")
    assert router.resolve(None) == (default, "base-model")
    with pytest.raises(ModelError, match=r"unknown model provider 'x'.*configured: other"):
        router.resolve("x/y")
    with pytest.raises(ModelError, match="no default model"):
        ModelRouter(default).resolve(None)


async def test_default_model_is_used_by_agents_that_name_none(
    provider: ModelProvider, fake: FakeModel
) -> None:
    from app.engine import Engine

    fake.script("fallback", [text("from the default model")])
    engine = Engine([Agent(name="a")], ModelRouter(provider, default_model="fallback"))

    result = await engine.run(engine.start("a", "hi"))

    assert result.outcome == Completed("from the default model")
