"""The model interface: what the loop asks a model backend, and what it gets back."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app.engine.output import StructuredOutput
from app.engine.state import Message, Usage

TextSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One Chat Completions request, with the provider prefix already taken off `model`."""

    model: str
    messages: list[Message]
    tools: list[dict[str, Any]] = field(default_factory=list)
    temperature: float | None = None
    max_tokens: int | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None  # Chat Completions' `response_format`


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """The assistant message (`role`, `content`, and `tool_calls` when there are any) and usage.

    The message may carry `provider_data`: what the server sent beyond Chat Completions that it
    needs back later (see `app.engine.providers.fields`). `finish_reason` is Chat Completions'
    (`stop`, `tool_calls`, `length`, `content_filter`), when the backend says.
    """

    message: Message
    usage: Usage
    finish_reason: str | None = None


class ModelProvider(abc.ABC):
    """A model backend. Subclass it to bring one of your own; raise `ModelError` on failure.

    `complete` should hand each piece of text to `on_text` as it is generated when it can; the
    returned message must hold the whole text either way. `structured_output` says how the
    loop asks it for a structured final answer: with `response_format`, or with a tool named
    `final_output` whose parameters are the schema.
    """

    structured_output: StructuredOutput = "response_format"

    @abc.abstractmethod
    async def complete(
        self, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelResponse: ...

    async def aclose(self) -> None:  # noqa: B027 - most providers hold nothing to close
        """Release connections; called when the service stops."""


def unusable(response: ModelResponse) -> str | None:
    """Why the loop cannot take this answer, or None: a cut or empty answer is never final."""
    if response.finish_reason == "length":
        return (
            "the answer was cut at its token limit (finish_reason 'length'), so it is not "
            "taken as an answer; raise max_tokens or ask for less"
        )
    if response.finish_reason == "content_filter":
        return "the server's content filter stopped the answer (finish_reason 'content_filter')"
    message = response.message
    if message.get("tool_calls"):
        return None
    content = message.get("content")
    if content.strip() if isinstance(content, str) else content:  # text, or content parts
        return None
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        return f"the model refused: {refusal}"
    return "the server sent an empty answer (no text and no tool calls)"
