"""A structured final answer: taken when it validates, sent back with its errors when not.

The repair is part of the conversation and the count of repairs part of the state, so a run
taken over while a repair is in flight asks again with the same count.
"""

from __future__ import annotations

from typing import Any

from app.engine import calls, events
from app.engine.events import RunEvent
from app.engine.outcomes import Completed, Failed, RunAgain, TurnOutcome
from app.engine.output import FINAL_OUTPUT_TOOL, InvalidOutput, OutputSpec, repair_message
from app.engine.state import CallStatus, Message, RunError, RunState

Answer = tuple[TurnOutcome, list[RunEvent]]

ACCEPTED = "The final output was accepted."
NOT_RUN = f"Not run: this turn called {FINAL_OUTPUT_TOOL}, which ends the turn."


def final_answer(
    state: RunState,
    spec: OutputSpec,
    assistant: Message,
    raw_calls: list[dict[str, Any]],
    *,
    tool: bool,
) -> Answer | None:
    """How the turn ends when the model's answer is a final one; None when it asked for tools
    and the turn goes on (with `tool`, a `final_output` call is the final answer)."""
    if tool:
        final = next((c for c in raw_calls if _name(c) == FINAL_OUTPUT_TOOL), None)
        if final is not None:
            return _tool_answer(state, spec, raw_calls, final)
    if raw_calls:
        return None
    try:
        return Completed(spec.validate_text(_text(assistant.get("content")))), []
    except InvalidOutput as exc:
        errors = exc.errors
        if tool:
            errors = [*errors, f"give the final answer by calling the {FINAL_OUTPUT_TOOL} tool"]
        outcome = _again_or_fail(state, errors)
        if not isinstance(outcome, RunAgain):
            return outcome, []
        repair: Message = {"role": "user", "content": repair_message(spec, errors, tool=tool)}
        state.messages.append(repair)
        return outcome, [events.message(repair)]


def _tool_answer(
    state: RunState, spec: OutputSpec, raw_calls: list[dict[str, Any]], final: dict[str, Any]
) -> Answer:
    """A `final_output` call ends the turn: its result says whether it validated; the turn's
    other calls are not run (the model meant to be done)."""
    step = state.steps[-1]
    step.tool_calls = [calls.parse_call(raw) for raw in raw_calls]
    state.open_step = True
    call = next(c for c in step.tool_calls if c.call_id == final.get("id"))
    emitted = [events.tool_call_started(call, step.agent)]
    outcome: TurnOutcome
    try:
        value = spec.validate_arguments(call.arguments)
    except InvalidOutput as exc:
        call.status, call.output = CallStatus.FAILED, repair_message(spec, exc.errors, tool=True)
        outcome = _again_or_fail(state, exc.errors)
    else:
        call.status, call.output = CallStatus.COMPLETED, ACCEPTED
        outcome = Completed(value)
    emitted.append(events.tool_call_completed(call))
    emitted += calls.close_step(state, NOT_RUN)
    return outcome, emitted


def _again_or_fail(state: RunState, errors: list[str]) -> TurnOutcome:
    if state.output_repairs >= state.config.output_retries:
        tries = state.output_repairs + 1
        message = f"the final answer did not validate ({tries} tries): " + "; ".join(errors)
        return Failed(RunError("output_invalid", message))
    state.output_repairs += 1
    return RunAgain()


def _name(raw_call: dict[str, Any]) -> Any:
    return (raw_call.get("function") or {}).get("name")


def _text(content: Any) -> str:
    """A message's text, from a string or from content parts."""
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""
