"""Chat Completions answers joined into one message, whichever way the server streamed them.

Servers disagree on how a tool call is streamed (see the README's "Model servers"):
- OpenAI: `index` on every delta, `id` and `name` on the first, arguments in pieces;
- Ollama: each call whole, `index` 0 for every call (older versions: no `index`);
- Gemini: each call whole, no `index`, `id` often "";
- vLLM: the same `id` on every delta of a call; llama.cpp before its fix: the name on every delta
  and the id inside `function`; LiteLLM over Bedrock: the first call at `index` 1;
- proxies of Ollama's native API: arguments as a JSON object rather than text.
- Poolside, mlx-openai-server before its fix: a new `id` on the deltas after a call's first.
So a delta joins the call with the same id. Otherwise it starts a new call when it names a tool
and brings a new id, or follows a call whose arguments are already whole JSON; a delta that names
no tool never starts one: it joins the call with its index, or the last call. A name seen again
is not appended; a call keeps the first id it was given. Every field beyond Chat Completions
(reasoning text, signatures) is kept for the server, under `provider_data`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.engine.model import ModelResponse
from app.engine.providers.fields import argument_text, with_provider_data
from app.engine.providers.usage import chunk_usage, read_usage
from app.engine.state import Message, Usage

# Chat Completions' own fields; `annotations` (citations) are for the reader, not the server.
_MESSAGE_KEYS = frozenset(
    {"role", "content", "tool_calls", "refusal", "function_call", "audio", "annotations"}
)
_CALL_KEYS = frozenset({"index", "id", "type", "function"})


@dataclass
class _Call:
    id: str = ""
    index: int | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def take(self, delta: dict[str, Any]) -> None:
        function = delta.get("function")
        if isinstance(function, dict):
            name = function.get("name")
            if isinstance(name, str) and name:
                self._take_name(name)
            self._take_arguments(function.get("arguments"))
        if not self.id and isinstance(delta.get("id"), str):
            self.id = delta["id"]
        for key, value in delta.items():
            if key not in _CALL_KEYS:
                _merge(self.extra, key, value)

    def _take_name(self, name: str) -> None:
        # A name sent again, whole or as it grew so far, replaces; only a new piece is appended.
        if not self.name or name.startswith(self.name):
            self.name = name
        else:
            self.name += name

    def _take_arguments(self, arguments: object) -> None:
        if isinstance(arguments, str):
            self.arguments.append(arguments)
        elif arguments is not None:  # an object, from proxies of Ollama's native API
            self.arguments = [json.dumps(arguments)]

    def whole(self) -> bool:
        try:
            json.loads("".join(self.arguments))
        except ValueError:
            return False
        return True


@dataclass
class Assembler:
    """Feed it each chunk (`add_chunk`) or one whole completion (`add_completion`)."""

    model: str
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    calls: list[_Call] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=lambda: Usage(requests=1))
    finish_reason: str | None = None
    _by_id: dict[str, _Call] = field(default_factory=dict)
    _by_index: dict[int, _Call] = field(default_factory=dict)

    def add_chunk(self, chunk: Any) -> str:
        """One streamed chunk, as JSON; returns the answer text it adds."""
        return self._add(chunk, "delta", self._add_call_delta)

    def add_completion(self, completion: Any) -> str:
        """A whole `chat.completion` (a server that ignored `stream`); returns its text."""
        return self._add(completion, "message", lambda delta: self._new_call().take(delta))

    def _add(self, chunk: Any, key: str, add_call: Callable[[dict[str, Any]], None]) -> str:
        if not isinstance(chunk, dict):
            return ""
        usage = chunk_usage(chunk)
        if usage is not None:
            self.usage = read_usage(usage)  # running totals: the last one counts
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            return ""
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        delta = choice.get(key)
        if not isinstance(delta, dict):
            return ""
        for call_delta in delta.get("tool_calls") or ():
            if isinstance(call_delta, dict):
                add_call(call_delta)
        for name, value in delta.items():
            if name not in _MESSAGE_KEYS:
                _merge(self.extra, name, value)
        if isinstance(delta.get("refusal"), str):
            self.refusal.append(delta["refusal"])
        text = _text(delta.get("content"))
        if text:
            self.content.append(text)
        return text

    def _add_call_delta(self, delta: dict[str, Any]) -> None:
        function = delta.get("function")
        if not isinstance(function, dict):
            function = {}
        call_id = delta.get("id") or function.get("id")  # llama.cpp put it in `function`
        call_id = call_id if isinstance(call_id, str) else ""
        index = delta.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else None
        named = isinstance(function.get("name"), str) and bool(function["name"])
        call = self._continued(call_id, index, named) or self._new_call()
        if call_id:
            call.id = call.id or call_id
            self._by_id[call_id] = call
        if index is not None:
            call.index = index
            self._by_index[index] = call
        call.take(delta)

    def _continued(self, call_id: str, index: int | None, named: bool) -> _Call | None:
        """The call a delta continues, or None when it starts one."""
        known = self._by_id.get(call_id) if call_id else None
        if known is not None:
            return known if index in (None, known.index) else None
        if call_id and named:
            return None
        call = self._by_index.get(index) if index is not None else None
        if index is None and self.calls:
            call = self.calls[-1]
        if call is not None and named and call.name and call.whole():
            return None  # each call whole, with no id or one index for all (Gemini, Ollama)
        return call

    def _new_call(self) -> _Call:
        call = _Call()
        self.calls.append(call)
        return call

    def response(self) -> ModelResponse:
        content = "".join(self.content)
        message: Message = {"role": "assistant", "content": content or None}
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": argument_text("".join(call.arguments)),
                    },
                }
                for call in self.calls
            ]
        with_provider_data(message, self.model, self.extra, [call.extra for call in self.calls])
        return ModelResponse(message, self.usage, self.finish_reason)


def _text(content: object) -> str:
    """Text content, or the text parts of content sent as a list (Mistral's reasoning models)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


def _merge(into: dict[str, Any], key: str, value: object) -> None:
    """Streamed text is joined and lists extended; objects are merged, their leaves replaced."""
    if value is None:
        return
    old = into.get(key)
    if isinstance(value, str) and isinstance(old, str):
        into[key] = old + value
    elif isinstance(value, list) and isinstance(old, list):
        into[key] = [*old, *value]
    elif isinstance(value, dict) and isinstance(old, dict):
        into[key] = _deep_merge(old, value)
    else:
        into[key] = value


def _deep_merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        elif value is not None:
            merged[key] = value
    return merged
