"""The per-run knobs of the loop."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ToolErrors = Literal["continue", "fail"]


class RunConfig(BaseModel):
    """How one run executes; the run's values override the agent's where both exist."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_turns: int = Field(
        30, ge=1, le=1000, description="Model calls allowed before the run fails."
    )
    timeout_seconds: float = Field(
        120, gt=0, le=86_400, description="Execution time allowed; time awaiting approval is free."
    )
    temperature: float | None = Field(None, ge=0, le=2, description="Overrides the agent's.")
    max_tokens: int | None = Field(None, ge=1, description="Overrides the agent's.")
    parallel_tool_calls: bool = Field(True, description="Run a turn's tool calls concurrently.")
    tool_errors: ToolErrors = Field(
        "continue", description="`continue`: the model sees the error; `fail`: the run fails."
    )
    max_history_messages: int | None = Field(
        None,
        ge=0,
        description="The most of its session's stored messages the model sees, the newest "
        "(null: all); a tool result is never sent without the assistant message that asked "
        "for it. The session keeps every message.",
    )
    output_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Times a structured final answer that does not validate is sent back to "
        "the model with the errors before the run fails with `output_invalid`.",
    )
    debug: bool = Field(False, description="Log every model request, response and tool call.")
