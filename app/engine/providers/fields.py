"""Fields a server sends beyond Chat Completions and needs back: kept, and sent back to it alone.

DeepSeek refuses a conversation whose tool-call turns lost their `reasoning_content`; Gemini 3
one whose tool calls lost `extra_content.google.thought_signature`; Anthropic one whose tool use
lost its thinking blocks. Strict servers (Groq, Mistral) refuse fields they do not know. So an
assistant message keeps such fields under `provider_data`, with the model that produced them:

    {"role": "assistant", "content": null, "tool_calls": [{..., "provider_data": {...}}],
     "provider_data": {"model": "deepseek-chat", "reasoning_content": "..."}}

and a request to that same model puts them back where the server had them; any other model gets
plain Chat Completions messages. The state is JSON, so a run taken over by another process sends
them too. Some servers refuse what they sent (Groq: "property 'reasoning' is unsupported" for
most of its reasoning models), so a field can be withheld: the provider does so once a 400
names it (see `chat_request.refused_field`).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from app.engine.state import Message

PROVIDER_DATA = "provider_data"


def with_provider_data(
    message: Message, model: str, fields: dict[str, Any], call_fields: list[dict[str, Any]]
) -> Message:
    """`message` with the server's extra fields (message-level, then per tool call) kept."""
    if fields:
        message[PROVIDER_DATA] = {"model": model, **fields}
    for call, extra in zip(message.get("tool_calls") or (), call_fields, strict=False):
        if extra:
            call[PROVIDER_DATA] = extra
            message.setdefault(PROVIDER_DATA, {"model": model})
    return message


def provider_fields(message: Message, model: str) -> dict[str, Any] | None:
    """The fields `model` left on this message (without `model`); None for any other model."""
    data = message.get(PROVIDER_DATA)
    if not isinstance(data, dict) or data.get("model") != model:
        return None
    return {key: value for key, value in data.items() if key != "model"}


def sent_back(messages: list[Message], model: str) -> set[str]:
    """The names of the fields `model` left on these messages (or on their tool calls)."""
    names: set[str] = set()
    for message in messages:
        mine = provider_fields(message, model)
        if mine is None:
            continue
        names.update(mine)
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get(PROVIDER_DATA), dict):
                names.update(call[PROVIDER_DATA])
    return names


def outgoing_messages(
    messages: list[Message], model: str, withheld: Collection[str] = ()
) -> list[Message]:
    """The messages as `model` should get them: its own fields back in place (but those in
    `withheld`), no one else's.

    Tool-call arguments that are not the JSON text of an object go as `{}` (objects as their
    JSON text): vLLM and Ollama parse history's arguments and answer 400 to `""` or broken JSON
    (vllm#19419, #48922), so one malformed call would fail every later turn. The call's tool
    result already told the model what was wrong; the stored message keeps what it sent.
    """
    return [
        _outgoing(message, model, withheld) if _needs_rewrite(message) else message
        for message in messages
    ]


def _needs_rewrite(message: Message) -> bool:
    if PROVIDER_DATA in message:
        return True
    return any(
        not _valid_arguments(call.get("function", {}).get("arguments"))
        for call in message.get("tool_calls") or ()
        if isinstance(call, dict)
    )


def _valid_arguments(arguments: object) -> bool:
    if not isinstance(arguments, str):
        return False
    try:
        return isinstance(json.loads(arguments), dict)
    except ValueError:
        return False


def _outgoing(message: Message, model: str, withheld: Collection[str]) -> Message:
    mine = provider_fields(message, model)
    sent = {key: value for key, value in message.items() if key != PROVIDER_DATA}
    sent.update(_kept(mine or {}, withheld))
    if message.get("tool_calls"):
        sent["tool_calls"] = [
            _outgoing_call(call, mine is not None, withheld) for call in message["tool_calls"]
        ]
    return sent


def _outgoing_call(call: Any, mine: bool, withheld: Collection[str]) -> Any:
    if not isinstance(call, dict):
        return call
    sent = {key: value for key, value in call.items() if key != PROVIDER_DATA}
    if mine and isinstance(call.get(PROVIDER_DATA), dict):
        sent.update(_kept(call[PROVIDER_DATA], withheld))
    function = sent.get("function")
    if isinstance(function, dict) and not _valid_arguments(function.get("arguments")):
        arguments = function.get("arguments")
        sent["function"] = {
            **function,
            "arguments": json.dumps(arguments) if isinstance(arguments, dict) else "{}",
        }
    return sent


def _kept(fields: dict[str, Any], withheld: Collection[str]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if key not in withheld}


def argument_text(arguments: object) -> str:
    """Tool-call arguments as the JSON text every server expects: `{}` when there are none."""
    if isinstance(arguments, str):
        return arguments if arguments.strip() else "{}"
    return "{}" if arguments is None else json.dumps(arguments)
