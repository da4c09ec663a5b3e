"""A scripted reply rendered as a Chat Completions response, whole or streamed, in a dialect."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from app.testing.dialects import Dialect, signature
from app.testing.script import Reply

# A held stream goes on by itself after this long, so a test that forgets to release ends.
HOLD_LIMIT_SECONDS = 60

Delta = dict[str, Any]


class Completion:
    """One answer: its tool calls (ids stable for the conversation), text, usage and finish."""

    def __init__(
        self,
        response_id: str,
        model: str,
        prefix: str,
        prompt_chars: int,
        reply: Reply,
        dialect: Dialect,
        releases: threading.Semaphore,
    ) -> None:
        self.id = response_id
        self.model = model
        self.reply = reply
        self.dialect = dialect
        self.releases = releases
        self.created = int(time.time())
        self.tool_calls: list[dict[str, Any]] = [
            {
                "id": spec.id if spec.id is not None else f"call_{prefix}_{index}",
                "type": "function",
                "function": {
                    "name": spec.name,
                    "arguments": spec.arguments
                    if isinstance(spec.arguments, str)
                    else json.dumps(spec.arguments),
                },
            }
            for index, spec in enumerate(reply.tool_calls)
        ]
        self.reasoning = reply.reasoning
        if self.reasoning is None and dialect.reasoning_required_back:
            self.reasoning = "Thinking it over."
        prompt_tokens = max(1, prompt_chars // 4)
        generated = (reply.content or "") + "".join(
            call["function"]["arguments"] for call in self.tool_calls
        )
        self.prompt_tokens, self.completion_tokens = prompt_tokens, max(1, len(generated) // 4)
        self.reasoning_tokens = len(self.reasoning or "") // 4
        default_finish = dialect.finish_with_calls if self.tool_calls else "stop"
        self.finish_reason = reply.finish_reason or default_finish

    def usage(self, completion_tokens: int | None = None) -> dict[str, Any]:
        completion = self.completion_tokens if completion_tokens is None else completion_tokens
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }
        if self.dialect.cache_usage:
            usage["prompt_cache_hit_tokens"] = self.prompt_tokens // 2
            usage["prompt_cache_miss_tokens"] = self.prompt_tokens - self.prompt_tokens // 2
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return usage

    def whole(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.reply.content}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.reasoning is not None and self.dialect.reasoning_field:
            message[self.dialect.reasoning_field] = self.reasoning
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
        return {**self._envelope("chat.completion"), "choices": [choice], "usage": self.usage()}

    async def chunks(self, include_usage: bool) -> AsyncIterator[str]:
        dialect = self.dialect
        if dialect.content_filter:
            yield self._chunk([], prompt_filter_results=[{"prompt_index": 0}])
        deltas = self._deltas()
        for index, delta in enumerate(deltas):
            if dialect.empty_tool_list and "tool_calls" not in delta:
                delta = {**delta, "tool_calls": []}
            running = self.usage(self.completion_tokens * index // len(deltas))
            yield self._chunk([self._choice(delta, None)], **self._usage_fields(running))
            if self.reply.chunk_delay:
                await asyncio.sleep(self.reply.chunk_delay)
            if index in self.reply.hold_after:  # delta 0 only opens the message: no text yet
                await asyncio.to_thread(self.releases.acquire, True, HOLD_LIMIT_SECONDS)
        if dialect.content_filter:  # a filter verdict with no delta at all
            yield self._chunk([{"index": 0, "finish_reason": None, "content_filter_results": {}}])
        last = self._usage_fields(self.usage(), last=True)
        yield self._chunk([self._choice({}, self.finish_reason)], **last)
        if include_usage and dialect.usage == "final":
            yield self._chunk([], usage=self.usage())
        yield self._event("[DONE]")

    def _usage_fields(self, usage: dict[str, Any], *, last: bool = False) -> dict[str, Any]:
        """What a chunk carries of the usage so far: OpenAI's `null` until the usage chunk."""
        if self.dialect.usage == "every_chunk":
            return {"usage": usage}
        if not last:
            return {} if self.dialect.usage == "x_groq" else {"usage": None}
        if self.dialect.usage == "x_groq":
            return {"x_groq": {"usage": usage}}
        return {"usage": usage if self.dialect.usage == "last" else None}

    def _choice(self, delta: Delta, finish_reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        if self.dialect.content_filter:
            choice["content_filter_results"] = {"hate": {"filtered": False, "severity": "safe"}}
        return choice

    def _deltas(self) -> list[Delta]:
        deltas: list[Delta] = [{"role": "assistant", "content": ""}]
        field = self.dialect.reasoning_field
        if self.reasoning is not None and field:
            deltas += [{field: piece} for piece in _pieces(self.reasoning) or [""]]
        deltas += [{"content": piece} for piece in _pieces(self.reply.content or "")]
        for index, call in enumerate(self.tool_calls):
            deltas += [{"tool_calls": [part]} for part in self._call_parts(index, call)]
        return deltas

    def _call_parts(self, position: int, call: dict[str, Any]) -> list[dict[str, Any]]:
        dialect = self.dialect
        name, arguments = call["function"]["name"], call["function"]["arguments"]
        if dialect.whole_calls:
            pieces: list[Any] = [_object(arguments) if dialect.object_arguments else arguments]
        else:
            third = max(1, len(arguments) // 3)
            pieces = ["", *(arguments[i : i + third] for i in range(0, len(arguments), third))]
        index = {"each": position, "zero": 0, "none": None, "null": None}.get(
            dialect.call_index, position + (1 if self.reply.content else 0)
        )
        parts = []
        for number, piece in enumerate(pieces):
            first = number == 0
            function: dict[str, Any] = {"arguments": piece}
            if first or dialect.repeat_name:
                function["name"] = name
            part: dict[str, Any] = {"function": function}
            if dialect.call_index != "none":
                part["index"] = index
            if dialect.call_id == "in_function":
                function["id"] = call["id"]
            elif dialect.call_id == "empty":
                part["id"] = ""
            elif first or dialect.call_id == "every":
                part["id"] = call["id"]
            elif dialect.call_id == "changing":
                part["id"] = f"{call['id']}_{number}"
            if first:
                part["type"] = "function"
            if first and position == 0 and dialect.signatures:
                part["extra_content"] = {"google": {"thought_signature": signature(name)}}
            parts.append(part)
        return parts

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        chunk = {**self._envelope("chat.completion.chunk"), "choices": choices, **extra}
        return self._event(json.dumps(chunk))

    def _event(self, data: str) -> str:
        if self.dialect.sse_comments:
            return f": OPENROUTER PROCESSING\n\ndata:{data}\n\n"
        return f"data: {data}\n\n"


def error_event(status: int, body: dict[str, Any]) -> str:
    """An error sent inside a stream that began with 200."""
    error = body.get("error")
    fields = error if isinstance(error, dict) else body
    return f"data: {json.dumps({'error': {**fields, 'code': status}})}\n\n"


def _pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


def _object(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
