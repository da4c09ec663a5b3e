"""The fake model as Anthropic's Messages API (`POST /v1/messages`): the same scripts.

A reply with `reasoning` starts with a thinking block whose signature is a hash of its text;
its tool calls' ids end in `_t`, and, as Anthropic does when thinking is on, a later request
whose turn with such a call lost that block (or changed it) is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from app.testing.dialects import Problem
from app.testing.script import Reply

_STOP_REASONS = {"length": "max_tokens", "content_filter": "refusal", "stop": "end_turn"}


def chat_view(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's turns as Chat Completions roles, for picking the scripted reply."""
    view: list[dict[str, Any]] = []
    for turn in body.get("messages") or ():
        content = turn.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        texts = [b.get("text", "") for b in blocks if b.get("type") == "text"]
        view += [{"role": "tool"} for b in blocks if b.get("type") == "tool_result"]
        if texts or turn.get("role") == "assistant":
            view.append({"role": turn.get("role"), "content": " ".join(texts)})
    return view


def check(body: dict[str, Any]) -> Problem | None:
    """Anthropic's refusal of a tool-use turn that lost its thinking block."""
    for number, turn in enumerate(body.get("messages") or ()):
        blocks = turn.get("content") if turn.get("role") == "assistant" else None
        if not isinstance(blocks, list):
            continue
        thought = any(b.get("type") == "tool_use" and b["id"].endswith("_t") for b in blocks)
        first = blocks[0] if blocks else {}
        signed = first.get("type") == "thinking" and first.get("signature") == _sign(
            first.get("thinking", "")
        )
        if thought and not signed:
            message = (
                f"messages.{number}.content.0: Expected `thinking` with a valid signature. When "
                "`thinking` is enabled, an `assistant` message must start with a thinking block."
            )
            return 400, {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": message},
            }
    return None


def error_body(message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": "api_error", "message": message}}


def error_event(message: str) -> str:
    """An error sent inside a stream that began with 200, as Anthropic sends `overloaded_error`."""
    error = {"type": "error", "error": {"type": "overloaded_error", "message": message}}
    return _event("error", error)


class MessagesAnswer:
    """One scripted reply as a Messages API answer, whole or as its stream of events."""

    def __init__(
        self, message_id: str, model: str, prefix: str, prompt_chars: int, reply: Reply
    ) -> None:
        self.id, self.model, self.reply = message_id, model, reply
        mark = "_t" if reply.reasoning else ""
        self.blocks: list[dict[str, Any]] = []
        if reply.reasoning:
            self.blocks.append(
                {
                    "type": "thinking",
                    "thinking": reply.reasoning,
                    "signature": _sign(reply.reasoning),
                }
            )
        if reply.content:
            self.blocks.append({"type": "text", "text": reply.content})
        for index, spec in enumerate(reply.tool_calls):
            arguments = (
                spec.arguments
                if isinstance(spec.arguments, dict)
                else json.loads(spec.arguments or "{}")
            )
            call_id = spec.id or f"toolu_{prefix}_{index}{mark}"
            self.blocks.append(
                {"type": "tool_use", "id": call_id, "name": spec.name, "input": arguments}
            )
        self.prompt_tokens = max(2, prompt_chars // 4)
        self.output_tokens = max(1, len(json.dumps(self.blocks)) // 4)
        default_stop = "tool_use" if reply.tool_calls else "end_turn"
        self.stop_reason = _STOP_REASONS.get(
            reply.finish_reason or "", reply.finish_reason or default_stop
        )

    def usage(self) -> dict[str, Any]:
        cached = self.prompt_tokens // 2
        return {
            "input_tokens": self.prompt_tokens - cached,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 0,
            "output_tokens": self.output_tokens,
        }

    def whole(self) -> dict[str, Any]:
        return {
            **self._envelope(),
            "content": self.blocks,
            "stop_reason": self.stop_reason,
            "stop_sequence": None,
            "usage": self.usage(),
        }

    async def events(self) -> AsyncIterator[str]:
        start = {**self._envelope(), "content": [], "stop_reason": None, "stop_sequence": None}
        yield _event(
            "message_start", {"message": {**start, "usage": {**self.usage(), "output_tokens": 1}}}
        )
        for index, block in enumerate(self.blocks):
            for event, data in _block_events(block):
                yield _event(event, {"index": index, **data})
            yield _event("content_block_stop", {"index": index})
        delta = {"stop_reason": self.stop_reason, "stop_sequence": None}
        yield _event(
            "message_delta", {"delta": delta, "usage": {"output_tokens": self.output_tokens}}
        )
        yield _event("message_stop", {})

    def _envelope(self) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model}


def _block_events(block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    kind = block["type"]
    empty: dict[str, Any]
    if kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
        empty = {"type": "thinking", "thinking": "", "signature": ""}
    elif kind == "text":
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
        empty = {"type": "text", "text": ""}
    else:
        arguments = json.dumps(block["input"])
        half = len(arguments) // 2
        deltas = [
            {"type": "input_json_delta", "partial_json": p}
            for p in (arguments[:half], arguments[half:])
        ]
        empty = {**block, "input": {}}
    start = ("content_block_start", {"content_block": empty})
    return [start, *(("content_block_delta", {"delta": delta}) for delta in deltas)]


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"


def _pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


def _sign(thinking: str) -> str:
    return "sig-" + hashlib.sha256(thinking.encode()).hexdigest()[:16]
