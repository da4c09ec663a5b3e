"""The fake model's script: what it answers, chosen from the request alone.

A reply is picked by the model name (one script per name), then by the first rule whose `match`
finds the last user message, then by position: the number of assistant messages after that user
message. The same request always gets the same reply, however many processes send it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FakeToolCall(_Strict):
    """A tool call the fake model asks for."""

    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict, description="object or raw text")
    id: str | None = Field(None, description="default: derived from the conversation")


class FakeError(_Strict):
    """An HTTP error instead of an answer."""

    status: int = Field(500, ge=400, le=599)
    message: str = "the fake model was told to fail"
    times: int | None = Field(None, ge=1, description="fail this many tries, then answer")
    retry_after_ms: int = Field(1, ge=0, description="sent so the client retries at once")


class Reply(_Strict):
    """One answer: text, tool calls, or an error; optionally slow."""

    content: str | None = None
    tool_calls: list[FakeToolCall] = Field(default_factory=list)
    reasoning: str | None = Field(
        None, description="reasoning text, sent in the dialect's reasoning field (if it has one)"
    )
    finish_reason: str | None = Field(
        None, description="default: `tool_calls` with calls (or the dialect's), else `stop`"
    )
    error: FakeError | None = None
    delay: float = Field(0, ge=0, description="seconds before the answer starts")
    chunk_delay: float = Field(0, ge=0, description="seconds between streamed chunks")
    hold_after: list[int] = Field(
        default_factory=list,
        description="after this many streamed text chunks (0: none yet), wait for a "
        "`FakeModel.release()` each",
    )


class Rule(_Strict):
    """Replies for conversations whose last user message matches `match` (a regex)."""

    match: str | None = None
    replies: list[Reply]


class Script(_Strict):
    rules: list[Rule]

    @classmethod
    def of(cls, *replies: Reply) -> Script:
        return cls(rules=[Rule(replies=list(replies))])


ScriptFile = TypeAdapter(dict[str, Script | list[Reply]])
"""A JSON file of scripts: model name -> a script, or a plain list of replies."""


def load_scripts(path: Path) -> dict[str, Script]:
    loaded = ScriptFile.validate_python(json.loads(path.read_text()))
    return {name: as_script(script) for name, script in loaded.items()}


def as_script(script: Script | list[Reply]) -> Script:
    return script if isinstance(script, Script) else Script.of(*script)


def text(content: str, **options: Any) -> Reply:
    """A reply with text and no tool calls."""
    return Reply(content=content, **options)


def call(name: str, arguments: dict[str, Any] | str | None = None, **options: Any) -> Reply:
    """A reply with one tool call."""
    return calls((name, arguments or {}), **options)


def calls(*tool_calls: tuple[str, dict[str, Any] | str], **options: Any) -> Reply:
    """A reply with several tool calls, in this order."""
    specs = [FakeToolCall(name=name, arguments=arguments) for name, arguments in tool_calls]
    return Reply(tool_calls=specs, **options)


def error(status: int = 500, *, times: int | None = None, message: str | None = None) -> Reply:
    """A reply that is an HTTP error, `times` tries long (or always)."""
    spec = FakeError(status=status, times=times)
    if message is not None:
        spec.message = message
    return Reply(error=spec)
