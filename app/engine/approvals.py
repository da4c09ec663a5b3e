"""Decisions on tool calls that need approval: from a handler, a remembered approval or a human."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pydantic
import structlog

from app.engine import events
from app.engine.agent import Agent, HandlerVerdict
from app.engine.calls import limit_output, rejected_output, validation_errors
from app.engine.context import RunContext, call_users_function
from app.engine.errors import (
    CallAlreadyDecided,
    InvalidDecision,
    RunEnded,
    RunNotPending,
    UnknownCall,
)
from app.engine.events import RunEvent
from app.engine.external import tool_table
from app.engine.guardrails import decide_ask
from app.engine.registry import AgentRegistry
from app.engine.state import (
    ApprovalRequest,
    CallStatus,
    Decision,
    DecisionSource,
    GuardrailAsk,
    RunState,
    RunStatus,
    ToolCall,
)
from app.engine.text import storable_text

log = structlog.get_logger("app.engine")


@dataclass(frozen=True, slots=True)
class DecisionInput:
    """A decision as a person sends it; `arguments` replaces the call's when approving;
    `output`, when approving, is the call's result: the tool is not run (a person did it by
    hand, or the client ran an external tool)."""

    call_id: str
    approved: bool
    reason: str | None = None
    arguments: dict[str, Any] | None = None
    remember: bool = False
    output: str | None = None


async def ask_handler(agent: Agent, request: ApprovalRequest, ctx: RunContext) -> HandlerVerdict:
    """The agent's handler verdict; a handler that raises or answers nonsense asks a human."""
    handler = agent.approval_handler
    if handler is None:
        return None
    try:
        verdict = await call_users_function(handler, request, ctx)
    except Exception:
        log.exception("approval_handler.failed", run_id=ctx.run_id, call_id=request.call_id)
        return None
    if verdict is None or isinstance(verdict, bool):
        return verdict
    if isinstance(verdict, tuple) and len(verdict) == 2 and isinstance(verdict[0], bool):
        return verdict[0], None if verdict[1] is None else storable_text(str(verdict[1]))
    log.error("approval_handler.bad_verdict", run_id=ctx.run_id, verdict=repr(verdict))
    return None


def record_decision(
    state: RunState,
    call: ToolCall,
    *,
    approved: bool,
    reason: str | None,
    source: DecisionSource,
    decided_by: str | None = None,
    output: str | None = None,
    max_output_bytes: int | None = None,
) -> list[RunEvent]:
    """Apply a decision to its call and keep it with the run; a rejected call is done, and so
    is one approved with its output (cut at `max_output_bytes` like any tool's)."""
    if not approved:
        call.status = CallStatus.REJECTED
        call.output = rejected_output(reason, in_doubt=call.in_doubt)
    elif output is not None:
        call.status = CallStatus.COMPLETED
        call.output = output
        if max_output_bytes is not None:
            limit_output(call, max_output_bytes)
    else:
        call.status = CallStatus.QUEUED
    decision = Decision(
        call_id=call.call_id,
        approved=approved,
        reason=reason,
        arguments=dict(call.arguments or {}) if approved else {},
        decided_by=decided_by,
        decided_at=datetime.now(UTC),
        source=source,
        output=call.output if output is not None else None,
    )
    state.decisions.append(decision)
    decided = [events.approval_decided(decision)]
    if call.status is CallStatus.QUEUED:
        return decided
    return [*decided, events.tool_call_completed(call)]


def apply_decisions(
    state: RunState,
    agents: AgentRegistry,
    decisions: Sequence[DecisionInput],
    decided_by: str | None,
    max_output_bytes: int,
) -> list[RunEvent]:
    """Check every decision first, then apply them all, so a bad one changes nothing."""
    if state.status.ended:
        raise RunEnded(f"the run has ended ({state.status.value})")
    if state.status is not RunStatus.PENDING_APPROVAL:
        raise RunNotPending(f"the run is {state.status.value}, not pending_approval")
    calls = {call.call_id: call for call in state.current_calls}
    asks = {ask.item_id: ask for ask in state.guardrail_asks}
    # Between turns (a guardrail asks) there are no calls, and no tools to check them by.
    tools = tool_table(agents.of_open_step(state), state) if state.open_step else {}
    seen: set[str] = set()
    remembered_here: set[str] = set()
    for decision in decisions:
        if decision.call_id in seen:
            raise InvalidDecision(f"call {decision.call_id!r} is decided twice in one request")
        seen.add(decision.call_id)
        ask = asks.get(decision.call_id)
        if ask is not None:
            _check_fits_ask(ask, decision)
            continue
        call = calls.get(decision.call_id)
        if call is None:
            raise UnknownCall(f"the run has no tool call {decision.call_id!r}")
        if call.status is not CallStatus.AWAITING_APPROVAL or call.name in remembered_here:
            raise CallAlreadyDecided(f"call {decision.call_id!r} is already decided")
        _check_fits_kind(call, decision)
        if decision.approved and decision.remember:
            remembered_here.add(call.name)
        if decision.approved and decision.arguments is not None:
            try:
                tools[call.name].schema.validate(decision.arguments)
            except pydantic.ValidationError as exc:
                raise InvalidDecision(
                    f"the arguments for {call.call_id!r} do not fit {call.name}",
                    validation_errors(exc),
                ) from exc

    emitted: list[RunEvent] = []
    for decision in decisions:
        if decision.call_id in asks:
            ask = asks[decision.call_id]
            answer = decide_ask(ask, decision.approved, decision.reason, decided_by)
            state.decisions.append(answer)
            emitted.append(events.approval_decided(answer))
            continue
        call = calls[decision.call_id]
        if decision.approved and decision.arguments is not None:
            call.arguments = decision.arguments
            call.raw_arguments = json.dumps(decision.arguments)
        emitted += record_decision(
            state,
            call,
            approved=decision.approved,
            reason=decision.reason,
            source="human",
            decided_by=decided_by,
            output=decision.output,
            max_output_bytes=max_output_bytes,
        )
        if decision.approved and decision.remember:
            emitted.extend(_remember(state, call.name, decided_by))
    if not state.pending_approvals:
        state.status = RunStatus.RUNNING
    return emitted


def _check_fits_kind(call: ToolCall, decision: DecisionInput) -> None:
    """An external call is answered with its output or rejected; the rest of a decision
    (other arguments, remembering the tool) means nothing for a call the service never runs."""
    if not decision.approved:
        if decision.output is not None:
            raise InvalidDecision(f"call {call.call_id!r}: a rejection carries no output")
        return
    if not call.external:
        return
    if decision.output is None:
        raise InvalidDecision(
            f"call {call.call_id!r} is of the external tool {call.name}: approve it with its "
            "output, or reject it"
        )
    if decision.arguments is not None or decision.remember:
        raise InvalidDecision(
            f"call {call.call_id!r} is of the external tool {call.name}: its decision takes "
            "an output, no arguments and no remember"
        )


def _check_fits_ask(ask: GuardrailAsk, decision: DecisionInput) -> None:
    """A guardrail's ask is approved or rejected, nothing more: there is no call to change."""
    if ask.approved is not None:
        raise CallAlreadyDecided(f"{ask.item_id!r} is already decided")
    if decision.arguments is not None or decision.output is not None or decision.remember:
        raise InvalidDecision(
            f"{ask.item_id!r} is guardrail {ask.name!r} asking a person: its decision takes "
            "approved and a reason, no arguments, output or remember"
        )


def _remember(state: RunState, tool_name: str, decided_by: str | None) -> list[RunEvent]:
    if tool_name not in state.remembered_tools:
        state.remembered_tools.append(tool_name)
    emitted: list[RunEvent] = []
    for call in state.current_calls:
        if call.name == tool_name and call.status is CallStatus.AWAITING_APPROVAL:
            emitted += record_decision(
                state, call, approved=True, reason=None, source="remember", decided_by=decided_by
            )
    return emitted
