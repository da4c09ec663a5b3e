"""Stream assembly rules no dialect of the fake model shows on its own."""

from __future__ import annotations

from typing import Any

from app.engine.providers.assembly import Assembler


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


def call_delta(**fields: Any) -> dict[str, Any]:
    return chunk({"tool_calls": [fields]})


def test_a_name_split_across_deltas_is_joined_and_one_sent_again_is_not() -> None:
    assembler = Assembler("m")
    for delta in [
        call_delta(index=0, id="c1", function={"name": "get_", "arguments": ""}),
        call_delta(index=0, function={"name": "weather", "arguments": '{"city":'}),
        call_delta(index=0, function={"name": "get_weather", "arguments": ' "Oslo"}'}),
    ]:
        assembler.add_chunk(delta)

    [tool_call] = assembler.response().message["tool_calls"]

    assert tool_call["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}


def test_deltas_without_index_or_id_continue_a_call_until_its_arguments_are_whole() -> None:
    assembler = Assembler("m")
    for delta in [
        call_delta(function={"name": "add", "arguments": '{"a": 1,'}),
        call_delta(function={"name": "add", "arguments": ' "b": 2}'}),
        call_delta(function={"name": "add", "arguments": '{"a": 3, "b": 4}'}),
    ]:
        assembler.add_chunk(delta)

    message = assembler.response().message

    assert [c["function"]["arguments"] for c in message["tool_calls"]] == [
        '{"a": 1, "b": 2}',
        '{"a": 3, "b": 4}',
    ]


def test_text_parts_are_the_answer_and_a_refusal_is_kept() -> None:
    assembler = Assembler("m")
    parts = [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "Hi"}]

    assert assembler.add_chunk(chunk({"content": parts})) == "Hi"
    assembler.add_chunk(chunk({"refusal": "I cannot."}, "stop"))

    assembler.add_chunk(chunk({"annotations": [{"type": "url_citation"}]}))

    response = assembler.response()
    assert response.message == {"role": "assistant", "content": "Hi", "refusal": "I cannot."}
    assert response.finish_reason == "stop"


def test_a_new_id_on_a_calls_later_deltas_continues_it() -> None:
    # Poolside and mlx-openai-server (before its fix) change the id after a call's first delta.
    assembler = Assembler("m")
    for delta in [
        call_delta(index=0, id="a1", type="function", function={"name": "add", "arguments": ""}),
        call_delta(index=0, id="a2", function={"arguments": '{"a": 1,'}),
        call_delta(index=0, id="a3", function={"arguments": ' "b": 2}'}),
        call_delta(index=1, id="b1", type="function", function={"name": "now", "arguments": ""}),
        call_delta(index=1, id="b2", function={"arguments": "{}"}),
    ]:
        assembler.add_chunk(delta)

    calls = assembler.response().message["tool_calls"]

    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("a1", "add", '{"a": 1, "b": 2}'),
        ("b1", "now", "{}"),
    ]


def test_an_id_wins_over_an_index_shared_by_every_call() -> None:
    # Ollama: each call whole, index 0 for all, an id of its own; whole arguments come early.
    assembler = Assembler("m")
    for call_id, arguments in [("c1", '{"a": 1, "b": 2}'), ("c2", '{"a": 3, "b": 4}')]:
        function = {"name": "add", "arguments": arguments}
        assembler.add_chunk(call_delta(index=0, id=call_id, function=function))

    calls = assembler.response().message["tool_calls"]

    assert [c["id"] for c in calls] == ["c1", "c2"]
    assert [c["function"]["arguments"] for c in calls] == ['{"a": 1, "b": 2}', '{"a": 3, "b": 4}']


def test_index_null_continues_the_last_call_and_text_between_calls_is_kept() -> None:
    assembler = Assembler("m")
    for delta in [
        chunk({"content": "Adding."}),
        call_delta(index=None, id="c1", function={"name": "add", "arguments": '{"a":'}),
        chunk({"content": " Then the time."}),
        call_delta(index=None, function={"arguments": " 1}"}),
        call_delta(index=None, id="c2", function={"name": "now", "arguments": ""}),
    ]:
        assembler.add_chunk(delta)

    message = assembler.response().message

    assert message["content"] == "Adding. Then the time."
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]] == [
        ("add", '{"a": 1}'),
        ("now", "{}"),
    ]


def test_usage_sent_again_replaces_the_last_and_groq_usage_is_read() -> None:
    assembler = Assembler("m")
    assembler.add_chunk({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 1}})
    assembler.add_chunk({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5}})
    assert (assembler.usage.prompt_tokens, assembler.usage.completion_tokens) == (10, 5)

    groq = Assembler("m")
    groq.add_chunk(
        {"choices": [], "x_groq": {"usage": {"prompt_tokens": 7, "completion_tokens": 2}}}
    )
    assert groq.usage.total_tokens == 9
