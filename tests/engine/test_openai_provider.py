"""The OpenAI-compatible provider against servers that refuse, fail, cut or need fields back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import Agent, tool
from app.engine import Completed, Engine, Failed, ModelRouter, OpenAIProvider
from app.engine.model import ModelRequest
from app.engine.providers.chat_request import refused_field
from app.engine.providers.failures import MAX_SERVER_TEXT
from app.engine.state import RunState
from app.testing import Dialect, FakeModel, FakeModelServer, Reply, call, calls, error, text
from app.testing.server import ThreadedServer

pytestmark = pytest.mark.anyio


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


billing = Agent(name="billing", model="other", instructions="You handle billing.")
triage = Agent(name="triage", model="m", tools=[add], handoffs=[billing])
sequential = Agent(name="sequential", model="m", tools=[add], parallel_tool_calls=False)
AGENTS = [triage, billing, sequential]


@pytest.fixture
def serve() -> Iterator[Any]:
    """`serve(dialect)` starts a fake model speaking it; all are stopped after the test."""
    servers: list[FakeModelServer] = []

    def start(dialect: str | Dialect = "openai") -> FakeModelServer:
        servers.append(FakeModelServer(FakeModel(dialect=dialect)).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
async def providers() -> AsyncIterator[Any]:
    """`provider(server, **settings)`: an OpenAIProvider closed after the test."""
    made: list[OpenAIProvider] = []

    def make(server: FakeModelServer, **settings: Any) -> OpenAIProvider:
        made.append(OpenAIProvider(base_url=server.base_url, max_retries=0, **settings))
        return made[-1]

    yield make
    for provider in made:
        await provider.aclose()


async def run(provider: OpenAIProvider, agent: str = "triage", **router: Any) -> RunState:
    engine = Engine(AGENTS, ModelRouter(provider, **router))
    state = engine.start(agent, "go")
    await engine.run(state)
    return state


async def run_against(answer: Callable[[Request], Awaitable[Response]]) -> RunState:
    """A run against a server whose every chat completion is `answer`'s."""
    app = Starlette(routes=[Route("/v1/chat/completions", answer, methods=["POST"])])
    with ThreadedServer(app) as server:
        provider = OpenAIProvider(base_url=f"{server.url}/v1", max_retries=0)
        try:
            return await run(provider)
        finally:
            await provider.aclose()


async def test_a_refused_field_is_left_out_once_named_and_from_then_on(
    serve: Any, providers: Any
) -> None:
    server = serve("o-series")
    server.fake.script(
        "m", [calls(("add", {"a": 1, "b": 1}), ("add", {"a": 2, "b": 2})), text("ok")]
    )
    provider = providers(server)

    state = await run(provider, "sequential")

    assert state.final_output == "ok"
    sent = [("parallel_tool_calls" in body) for body in server.fake.requests_for("m")]
    assert sent == [True, False, False]  # refused, asked again without it, then never sent


async def test_each_refused_field_is_left_out_in_turn_for_that_model_only(
    serve: Any, providers: Any
) -> None:
    server = serve(Dialect("strict", refuses=("stream_options", "parallel_tool_calls")))
    agents = [
        Agent(name=model, model=model, tools=[add], parallel_tool_calls=False)
        for model in ("m", "m2")
    ]
    engine = Engine(agents, ModelRouter(providers(server)))
    for model in ("m", "m2"):
        server.fake.script(model, [text("ok")])

    for agent in ("m", "m", "m2"):
        assert (await engine.run(engine.start(agent, "go"))).outcome == Completed("ok")

    optional = {"stream_options", "parallel_tool_calls"}
    sent = [(body["model"], sorted(optional & set(body))) for body in server.fake.requests]
    assert sent == [
        ("m", ["parallel_tool_calls", "stream_options"]),  # refused: stream_options
        ("m", ["parallel_tool_calls"]),  # refused: parallel_tool_calls
        ("m", []),  # answered: both are left out of m's requests from then on
        ("m", []),
        ("m2", ["parallel_tool_calls", "stream_options"]),  # another model asks for itself
        ("m2", ["parallel_tool_calls"]),
        ("m2", []),
    ]


async def test_a_field_is_not_remembered_when_the_request_without_it_fails_too(
    serve: Any, providers: Any
) -> None:
    server = serve()
    server.fake.script("m", [error(400, message="bad request: stream_options and more")])
    provider = providers(server)

    first, second = await run(provider), await run(provider)

    assert first.error is not None
    assert first.error.message == (
        "model 'm': the server answered 400: bad request: stream_options and more"
    )
    assert second.error == first.error
    assert ["stream_options" in body for body in server.fake.requests] == [True, False, True, False]


async def test_options_leave_out_what_a_server_refuses_without_asking_first(
    serve: Any, providers: Any
) -> None:
    server = serve("mistral")
    server.fake.script("m", [text("hi")])

    state = await run(providers(server, omit={"stream_options"}))

    assert state.final_output == "hi"
    assert ["stream_options" in body for body in server.fake.requests] == [False]


async def test_the_key_goes_in_its_own_header_with_the_query_the_server_wants(
    serve: Any, providers: Any
) -> None:
    server = serve("azure")
    server.fake.script("m", [text("hi")])
    azure = {"api_key": "k", "api_key_header": "api-key", "query": {"api-version": "2024-02-01"}}

    assert (await run(providers(server, **azure))).final_output == "hi"
    refused = await run(providers(server, api_key="k"))

    assert refused.error is not None
    assert refused.error.message.startswith("model 'm': the server answered 401: Access denied")


async def test_headers_reach_the_server(serve: Any, providers: Any) -> None:
    server = serve()
    server.fake.script("m", [text("hi")])
    seen: list[str] = []
    server.fake.app.add_middleware(_HeaderSpy, seen=seen)

    await run(providers(server, headers={"X-Tenant": "t1"}))

    assert seen == ["t1"]


class _HeaderSpy:
    def __init__(self, app: Any, seen: list[str]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            self.seen.append(headers.get(b"x-tenant", b"").decode())
        await self.app(scope, receive, send)


async def test_a_truncated_answer_fails_the_run(serve: Any, providers: Any) -> None:
    server = serve()
    server.fake.script("m", [Reply(content="The answer is", finish_reason="length")])

    state = await run(providers(server))

    assert state.error is not None
    assert state.error.code == "model_error"
    assert "model 'm': the answer was cut at its token limit" in state.error.message
    assert state.usage.requests == 1
    assert state.messages == [{"role": "user", "content": "go"}]


async def test_an_empty_answer_is_never_a_completion(serve: Any, providers: Any) -> None:
    server = serve()
    server.fake.script("m", [text("")])

    state = await run(providers(server))

    assert state.error is not None
    assert state.error.message == (
        "model 'm': the server sent an empty answer (no text and no tool calls)"
    )


async def test_errors_name_the_model_called_and_keep_the_servers_words(
    serve: Any, providers: Any
) -> None:
    server = serve()
    server.fake.script("fallback", [error(400, message="context too long " + "x" * 5000)])
    engine = Engine([Agent(name="a")], ModelRouter(providers(server), default_model="fallback"))
    state = engine.start("a", "go")

    result = await engine.run(state)

    assert isinstance(result.outcome, Failed)
    message = result.outcome.error.message
    assert message.startswith("model 'fallback': the server answered 400: context too long x")
    assert len(message) < MAX_SERVER_TEXT + 100
    assert len(server.fake.requests) == 1  # a 400 naming no optional field is not asked again


async def test_an_error_inside_the_stream_is_a_model_error(serve: Any, providers: Any) -> None:
    server = serve("anthropic-openai")
    server.fake.script("m", [error(529, message="Overloaded")])

    state = await run(providers(server))

    assert state.error is not None
    assert state.error.message == "model 'm': Overloaded"


async def test_reasoning_goes_back_to_the_model_that_wrote_it_and_no_other(
    serve: Any, providers: Any
) -> None:
    server = serve("vllm")
    server.fake.script(
        "m", [call("add", {"a": 1, "b": 2}, reasoning="Add them."), call("transfer_to_billing")]
    )
    # Two assistant messages come before billing's turn: its script starts at the third reply.
    server.fake.script("other", [text("unused"), text("unused"), text("billing here")])

    state = await run(providers(server))

    assert state.final_output == "billing here"
    assistant = state.messages[1]
    assert assistant["provider_data"] == {"model": "m", "reasoning": "Add them."}
    again = server.fake.requests_for("m")[1]["messages"][1]
    assert again["reasoning"] == "Add them."
    assert "provider_data" not in again
    [other] = server.fake.requests_for("other")
    assert all("reasoning" not in m and "provider_data" not in m for m in other["messages"])


async def test_a_run_taken_over_sends_the_signature_back(serve: Any, providers: Any) -> None:
    server = serve("gemini")
    server.fake.script(
        "m", [calls(("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})), text("3, 7")]
    )
    first = Engine(AGENTS, ModelRouter(providers(server)))
    state = first.start("triage", "go")
    await first.advance(state)  # the tool calls' turn, then this process is gone
    stored = json.loads(json.dumps(state.to_json()))

    second = Engine(AGENTS, ModelRouter(providers(server)))
    result = await second.run(RunState.from_json(stored))

    assert result.outcome == Completed("3, 7")
    first_call = stored["messages"][1]["tool_calls"][0]
    assert set(first_call["provider_data"]) == {"extra_content"}


async def test_usage_is_read_as_each_server_reports_it(serve: Any, providers: Any) -> None:
    deepseek, vllm = serve("deepseek"), serve("vllm")
    for server in (deepseek, vllm):
        server.fake.script("m", [text("A fairly long answer, so that it streams in many chunks.")])

    cached = await run(providers(deepseek))
    running = await run(providers(vllm))

    assert cached.usage.cached_tokens > 0
    assert cached.usage.reasoning_tokens > 0
    client = openai.AsyncOpenAI(base_url=vllm.base_url, api_key="x")
    whole = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "go"}]
    )
    await client.close()
    assert whole.usage is not None
    assert running.usage.completion_tokens == whole.usage.completion_tokens  # never summed


async def test_a_stream_that_is_not_json_is_a_model_error() -> None:
    async def garbled(request: Request) -> Response:
        return Response("data: {not json\n\n", media_type="text/event-stream")

    state = await run_against(garbled)

    assert state.error is not None
    assert state.error.message.startswith("model 'm': the server sent invalid JSON")


@pytest.mark.parametrize("dialect", ["vllm", "ollama"])
async def test_a_call_with_broken_arguments_does_not_break_later_turns(
    serve: Any, providers: Any, dialect: str
) -> None:
    server = serve(dialect)
    server.fake.script("m", [call("add", '{"a": 1,'), call("add", {"a": 1, "b": 2}), text("3")])

    state = await run(providers(server))

    assert state.final_output == "3", state.error
    broken = state.messages[1]["tool_calls"][0]["function"]["arguments"]
    assert broken == '{"a": 1,'  # stored as the model sent it; its result says why it failed
    assert "not valid JSON" in state.messages[2]["content"]
    [_, second, _] = server.fake.requests_for("m")
    assert second["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"


async def test_an_error_answered_as_json_with_200_keeps_the_servers_words() -> None:
    async def gateway(request: Request) -> Response:
        error = {"error": {"message": "upstream overloaded", "code": 529}}
        return Response(json.dumps(error), media_type="application/json")

    state = await run_against(gateway)

    assert state.error is not None
    assert state.error.message == "model 'm': upstream overloaded"


async def test_a_field_refused_back_is_withheld_from_then_on(serve: Any, providers: Any) -> None:
    server = serve("groq")
    server.fake.script("m", [call("add", {"a": 1, "b": 2}, reasoning="Add them."), text("3")])
    provider = providers(server)

    first, second = await run(provider), await run(provider)

    assert first.final_output == second.final_output == "3"
    assert first.messages[1]["provider_data"] == {"model": "m", "reasoning": "Add them."}
    history = [body["messages"][1:] for body in server.fake.requests]
    sent_back = ["reasoning" in messages[0] for messages in history if messages]
    assert sent_back == [True, False, False]  # refused once, then withheld for model m


def test_a_refusal_names_a_field_as_a_word() -> None:
    request = ModelRequest(
        "m",
        [
            {
                "role": "assistant",
                "content": "hi",
                "provider_data": {"model": "m", "reasoning": "r", "reasoning_content": "r"},
            }
        ],
    )
    refused = "property 'reasoning_content' is unsupported"

    assert refused_field(400, refused, request, {}, ()) == "reasoning_content"
    assert refused_field(400, refused, request, {}, {"reasoning_content"}) is None
    assert refused_field(500, refused, request, {}, ()) is None
