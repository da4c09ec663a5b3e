"""The model interface: what the loop asks a model backend, and what it gets back."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """The assistant message (`role`, `content`, and `tool_calls` when there are any) and usage."""

    message: Message
    usage: Usage


class ModelProvider(abc.ABC):
    """A model backend. Subclass it to bring one of your own; raise `ModelError` on failure.

    `complete` should hand each piece of text to `on_text` as it is generated when it can; the
    returned message must hold the whole text either way.
    """

    @abc.abstractmethod
    async def complete(
        self, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelResponse: ...

    async def aclose(self) -> None:  # noqa: B027 - most providers hold nothing to close
        """Release connections; called when the service stops."""
