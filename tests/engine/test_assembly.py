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

    response = assembler.response()
    assert response.message == {"role": "assistant", "content": "Hi", "refusal": "I cannot."}
    assert response.finish_reason == "stop"
