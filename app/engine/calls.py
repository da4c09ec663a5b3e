"""Helpers for a turn's tool calls: reading the model's request, result texts, closing a step."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pydantic_core

from app.engine import events
from app.engine.events import RunEvent
from app.engine.state import CallStatus, RunError, RunState, RunStatus, ToolCall
from app.engine.text import storable_json, storable_text
from app.engine.tools import Tool

_CANCELLED_OUTPUT = "Tool call cancelled: the run was cancelled before it finished."
_MAY_HAVE_ACTED = "It had started; whether it took effect is unknown."


def with_unique_ids(raw_calls: list[dict[str, Any]], turn: int) -> list[dict[str, Any]]:
    """Give a call without an id, or with an id an earlier call of the turn has, one of its own.

    Decisions and tool results name calls by id, so two calls must never share one. The
    assistant message is changed in place, so what is stored and what the model sees agree.
    """
    seen: set[str] = set()
    for index, raw_call in enumerate(raw_calls):
        call_id = raw_call.get("id")
        if not isinstance(call_id, str) or not call_id or call_id in seen:
            call_id = f"call_t{turn}_{index}"
            raw_call["id"] = call_id
        seen.add(call_id)
    return raw_calls


def parse_call(raw_call: dict[str, Any]) -> ToolCall:
    """A `ToolCall` for one entry of the assistant's `tool_calls`; bad JSON fails the call."""
    function = raw_call.get("function") or {}
    name = str(function.get("name") or "")
    raw_arguments = str(function.get("arguments") or "")
    call = ToolCall(str(raw_call.get("id")), name, raw_arguments, None, CallStatus.QUEUED)
    try:
        # Models send "" for a function without parameters.
        arguments = (
            json.loads(raw_arguments, parse_constant=_refuse_constant)
            if raw_arguments.strip()
            else {}
        )
    except json.JSONDecodeError as exc:
        fail(
            call, f"Error: the arguments of {name} are not valid JSON ({exc}). Send a JSON object."
        )
        return call
    if not isinstance(arguments, dict):
        fail(call, f"Error: the arguments of {name} must be a JSON object.")
        return call
    # The JSON may spell a NUL or a lone surrogate as an escape: replace them like any text a
    # model produces.
    call.arguments = storable_json(arguments)
    return call


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; stored state must stay valid JSON for every database.
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def fail(call: ToolCall, output: str) -> None:
    call.status = CallStatus.FAILED
    call.tool_failed = True
    call.output = output


def unknown_tool_output(name: str, tools: dict[str, Tool]) -> str:
    available = ", ".join(tools) or "none"
    return f"Error: there is no tool named {name!r}. Available tools: {available}."


def invalid_arguments_output(name: str, error: pydantic.ValidationError) -> str:
    problems = "; ".join(f"{item['loc']}: {item['msg']}" for item in validation_errors(error))
    return f"Error: invalid arguments for {name}: {problems}"


def validation_errors(error: pydantic.ValidationError) -> list[dict[str, str]]:
    """Pydantic's errors as `{loc, msg}`, the location dotted (`items.0.name`)."""
    return [
        {"loc": ".".join(str(part) for part in item["loc"]) or "arguments", "msg": item["msg"]}
        for item in error.errors(include_url=False)
    ]


def raised_output(name: str, exc: Exception) -> str:
    return storable_text(f"Error: the tool {name} raised {type(exc).__name__}: {exc}")


def rejected_output(reason: str | None, *, in_doubt: bool) -> str:
    if in_doubt:
        text = (
            "The tool call was not done: it was interrupted before its result was stored, "
            "and a person decided not to run it again."
        )
    else:
        text = "The tool call was rejected and not run."
    return f"{text} Reason: {reason}" if reason else text


def output_text(result: Any) -> str:
    """What the model sees of a tool's return value: text as is, anything else as JSON."""
    if isinstance(result, str):
        return storable_text(result)
    try:
        # Serialized as JSON, a NUL or a lone surrogate is an escape, which is storable text.
        return pydantic_core.to_json(result).decode()
    except pydantic_core.PydanticSerializationError:
        return storable_text(str(result))


def limit_output(call: ToolCall, max_bytes: int) -> None:
    """Cut the call's output at `max_bytes` of UTF-8 (on a character's edge), ending it with a
    marker that says how much was cut."""
    output = call.output
    if output is None or len(output) * 4 <= max_bytes:  # no character is over 4 bytes
        return
    encoded = output.encode()
    if len(encoded) <= max_bytes:
        return
    kept = encoded[:max_bytes].decode(errors="ignore")
    cut = len(encoded) - len(kept.encode())
    call.output = (
        f"{kept}\n[output truncated: {cut} of {len(encoded)} bytes cut at the limit of "
        f"{max_bytes} bytes]"
    )
    call.truncated = True


def fail_run(state: RunState, error: RunError) -> list[RunEvent]:
    """End the run as failed: calls without a result are closed, saying why."""
    unfinished = f"Tool call not completed: the run failed ({error.code})."
    emitted = close_step(state, unfinished) if state.open_step else []
    state.status = RunStatus.FAILED
    state.error = error
    end_guardrail_waits(state)
    return emitted


def end_guardrail_waits(state: RunState) -> None:
    """An ended run holds no answer for its guardrails and asks no person anything more."""
    state.held_output = None
    state.guardrail_asks = []


def close_step(state: RunState, unfinished_output: str = _CANCELLED_OUTPUT) -> list[RunEvent]:
    """End the open step: calls without a result are cancelled, then every call's result joins
    the history in call order, so the conversation stays valid for a model."""
    emitted: list[RunEvent] = []
    for call in state.current_calls:
        if not call.status.final:
            started = call.status is CallStatus.RUNNING
            call.status = CallStatus.CANCELLED
            # A started call may have acted before it was cut off: say so, never guess.
            call.output = f"{unfinished_output} {_MAY_HAVE_ACTED}" if started else unfinished_output
            emitted.append(events.tool_call_completed(call))
    for call in state.current_calls:
        tool_message = call.message()
        state.messages.append(tool_message)
        emitted.append(events.message(tool_message))
    state.open_step = False
    return emitted
