"""Chat Completions messages as Anthropic's Messages API takes them, and its answers back.

System messages become `system`; tool results become `tool_result` blocks of a user turn;
consecutive turns of one role are joined. The thinking blocks of an answer (with their
signatures) are kept under `provider_data` and go back, first in their turn, to the same model:
Anthropic refuses a tool-use turn that lost them.
"""

from __future__ import annotations

import json
from typing import Any

from app.engine.errors import ModelError
from app.engine.model import ModelRequest, ModelResponse
from app.engine.providers.fields import provider_fields, with_provider_data
from app.engine.state import Message, Usage

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}


def messages_request(request: ModelRequest, default_max_tokens: int) -> dict[str, Any]:
    """The `messages.stream` parameters for `request`."""
    system, turns = _conversation(request.messages, request.model)
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens or default_max_tokens,
        "messages": turns,
    }
    if system:
        params["system"] = system
    if request.tools:
        params["tools"] = [_tool(spec) for spec in request.tools]
        if request.parallel_tool_calls is False:
            params["tool_choice"] = {"type": "auto", "disable_parallel_tool_use": True}
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.response_format is not None:
        params["output_config"] = {"format": _output_format(request)}
    return params


def chat_response(message: dict[str, Any], model: str) -> ModelResponse:
    """A Messages API answer (as JSON) as the assistant message of Chat Completions."""
    text, calls, thinking = [], [], []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text.append(block["text"])
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {})
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": arguments},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            thinking.append(block)
    reply: Message = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        reply["tool_calls"] = calls
    with_provider_data(reply, model, {"thinking": thinking} if thinking else {}, [])
    stop = message.get("stop_reason") or ""
    finish = _FINISH_REASONS.get(stop, stop or None)
    return ModelResponse(reply, _usage(message.get("usage") or {}), finish)


def _usage(raw: dict[str, Any]) -> Usage:
    # Anthropic counts the prompt read from or written to the cache apart from `input_tokens`.
    cached = raw.get("cache_read_input_tokens") or 0
    prompt = (raw.get("input_tokens") or 0) + cached + (raw.get("cache_creation_input_tokens") or 0)
    completion = raw.get("output_tokens") or 0
    reasoning = (raw.get("output_tokens_details") or {}).get("thinking_tokens") or 0
    return Usage(1, prompt, completion, prompt + completion, cached, reasoning)


def _conversation(messages: list[Message], model: str) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text(message.get("content")))
        elif role == "tool":
            result = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
            content = _text(message.get("content"))
            _append(turns, "user", [{**result, "content": content} if content else result])
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(message, model))
        else:
            _append(turns, "user", _user_blocks(message.get("content")))
    return "\n\n".join(part for part in system if part), turns


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _assistant_blocks(message: Message, model: str) -> list[dict[str, Any]]:
    blocks = list((provider_fields(message, model) or {}).get("thinking") or ())
    text = _text(message.get("content"))
    if text.strip():
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _input(function.get("arguments")),
            }
        )
    return blocks


def _user_blocks(content: object) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content if isinstance(content, list) else ():
        if part.get("type") == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image_url":
            blocks.append({"type": "image", "source": _image_source(part["image_url"])})
    return blocks


def _image_source(image: Any) -> dict[str, Any]:
    url = image.get("url", "") if isinstance(image, dict) else str(image)
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[len("data:") :].split(";base64,", 1)
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _text(content: object) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def _input(arguments: object) -> dict[str, Any]:
    """A call's arguments as the object `tool_use` needs; `{}` when they were not JSON."""
    try:
        value = json.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _tool(spec: dict[str, Any]) -> dict[str, Any]:
    function = spec.get("function") or {}
    return {
        "name": function.get("name"),
        "description": function.get("description") or "",
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }


def _output_format(request: ModelRequest) -> dict[str, Any]:
    response_format = request.response_format or {}
    schema = (response_format.get("json_schema") or {}).get("schema")
    if response_format.get("type") != "json_schema" or not isinstance(schema, dict):
        kind = response_format.get("type")
        raise ModelError(
            f"model {request.model!r}: Anthropic's API takes a JSON schema, not {kind!r}"
        )
    return {"type": "json_schema", "schema": schema}
