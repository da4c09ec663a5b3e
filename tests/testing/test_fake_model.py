"""The scripted fake model is product code: it must answer exactly as scripted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionMessageFunctionToolCall, ChatCompletionMessageParam

from app.testing import (
    FakeModel,
    FakeModelServer,
    Reply,
    Rule,
    Script,
    call,
    error,
    load_scripts,
    text,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(fake_server: FakeModelServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=fake_server.base_url, api_key="x", max_retries=0)
    yield client
    await client.close()


async def ask(
    client: openai.AsyncOpenAI, model: str, *messages: ChatCompletionMessageParam
) -> str | None:
    response = await client.chat.completions.create(model=model, messages=list(messages))
    return response.choices[0].message.content


USER: ChatCompletionMessageParam = {"role": "user", "content": "hello"}
ASSISTANT: ChatCompletionMessageParam = {"role": "assistant", "content": "earlier"}


async def test_position_counts_assistant_messages_after_the_last_user_message(
    client: openai.AsyncOpenAI, fake: FakeModel
) -> None:
    fake.script("m", [text("first"), text("second")])

    assert await ask(client, "m", USER) == "first"
    assert await ask(client, "m", USER, ASSISTANT) == "second"
    # A new user message starts the script again, as a session's next run does.
    assert await ask(client, "m", USER, ASSISTANT, USER) == "first"
    assert len(fake.requests_for("m")) == 3


async def test_rules_match_the_last_user_message(
    client: openai.AsyncOpenAI, fake: FakeModel
) -> None:
    fake.script(
        "m",
        Script(
            rules=[
                Rule(match=r"(?i)refund", replies=[text("refund flow")]),
                Rule(replies=[text("anything else")]),
            ]
        ),
    )

    assert await ask(client, "m", {"role": "user", "content": "A REFUND please"}) == "refund flow"
    assert await ask(client, "m", USER) == "anything else"


async def test_unscripted_models_echo_and_star_scripts_catch_all(
    client: openai.AsyncOpenAI, fake: FakeModel
) -> None:
    assert await ask(client, "anything", USER) == "echo: hello"
    fake.script("*", [text("catch-all")])
    assert await ask(client, "anything", USER) == "catch-all"


async def test_a_script_without_a_reply_answers_400(
    client: openai.AsyncOpenAI, fake: FakeModel
) -> None:
    fake.script("m", [text("only one")])

    with pytest.raises(openai.BadRequestError, match="no reply #2"):
        await ask(client, "m", USER, ASSISTANT)


async def test_errors_for_a_number_of_tries_then_the_answer(
    client: openai.AsyncOpenAI, fake: FakeModel
) -> None:
    fake.script("m", [Reply(content="finally", error=error(503, times=2).error)])

    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as caught:
            await ask(client, "m", USER)
        assert caught.value.status_code == 503
        assert caught.value.response.headers["retry-after-ms"] == "1"
    assert await ask(client, "m", USER) == "finally"


async def test_tool_calls_have_ids_stable_for_the_same_conversation(
    client: openai.AsyncOpenAI, fake: FakeModel
) -> None:
    fake.script("m", [call("add", {"a": 1})])

    first = await client.chat.completions.create(model="m", messages=[USER])
    again = await client.chat.completions.create(model="m", messages=[USER])
    other = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "other"}]
    )

    [first_call] = first.choices[0].message.tool_calls or []
    assert isinstance(first_call, ChatCompletionMessageFunctionToolCall)
    assert first_call.function.name == "add"
    assert json.loads(first_call.function.arguments) == {"a": 1}
    assert first.choices[0].finish_reason == "tool_calls"
    assert (again.choices[0].message.tool_calls or [])[0].id == first_call.id
    assert (other.choices[0].message.tool_calls or [])[0].id != first_call.id


async def test_streaming_sends_chunks_and_usage(
    client: openai.AsyncOpenAI, fake: FakeModel
) -> None:
    fake.script("m", [text("one two three")])

    stream = await client.chat.completions.create(
        model="m",
        messages=[USER],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    usage: CompletionUsage | None = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage

    assert pieces == ["one", " two", " three"]
    assert usage is not None
    assert usage.total_tokens > 0


async def test_models_are_listed(client: openai.AsyncOpenAI, fake: FakeModel) -> None:
    fake.script("m1", [text("x")])

    assert [m.id async for m in client.models.list()] == ["m1"]


def test_scripts_load_from_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "scripts.json"
    path.write_text(
        json.dumps(
            {
                "plain": [{"content": "hi"}],
                "ruled": {"rules": [{"match": "x", "replies": [{"error": {"status": 429}}]}]},
            }
        )
    )

    scripts = load_scripts(path)

    assert scripts["plain"] == Script.of(text("hi"))
    assert scripts["ruled"].rules[0].replies[0].error is not None
    assert scripts["ruled"].rules[0].replies[0].error.status == 429
