"""The resources the service shows, shaped as the contract says: a run, whole.

The API answers with them and webhooks carry them, so they live below the HTTP layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from app.engine import RunConfig, RunState
from app.engine.state import (
    CallStatus,
    DecisionSource,
    ErrorCode,
    PendingKind,
    RunStatus,
    ToolCall,
    Usage,
)
from app.store.models import Run, WebhookDelivery

STATUSES = [status.value for status in RunStatus]
# Inline in the document, as it has always been: generated SDKs know it as `RunOutStatus`.
ShownStatus = Annotated[
    RunStatus, WithJsonSchema({"type": "string", "enum": STATUSES, "title": "Status"})
]

ToolCallStatus = Literal[
    "pending", "running", "completed", "failed", "rejected", "cancelled", "in_doubt"
]


class Shown(BaseModel):
    """A resource the service sends: its document lists every field as required, those with
    defaults too, since every answer carries them (generated clients then need no checks)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class ToolCallOut(Shown):
    call_id: str
    name: str
    arguments: dict[str, Any] | None = Field(description="Null when the model's JSON was invalid.")
    output: str | None
    status: ToolCallStatus
    truncated: bool = Field(False, description="The output was cut at MAX_TOOL_OUTPUT_BYTES.")


class Step(BaseModel):
    agent: str
    duration_ms: int
    tool_calls: list[ToolCallOut]


class PendingApproval(BaseModel):
    call_id: str
    tool: str
    arguments: dict[str, Any]
    agent: str
    in_doubt: bool
    kind: PendingKind = Field(
        description="`approval`: a call to approve; `external`: a call the client runs (answer "
        "with its output); `guardrail`: a guardrail asks a person."
    )
    reason: str | None = Field(
        None, description="What the guardrail asks the person (`kind: guardrail`); null for calls."
    )


class DecisionOut(BaseModel):
    call_id: str
    approved: bool
    reason: str | None
    arguments: dict[str, Any]
    decided_by: str | None
    decided_at: datetime
    source: DecisionSource
    output: str | None = Field(
        None, description="The call's result as the decision supplied it (the tool was not run)."
    )


class RunToolOut(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]


class RunErrorOut(BaseModel):
    code: ErrorCode
    message: str


class WebhookAttemptOut(BaseModel):
    at: datetime
    status_code: int | None = Field(description="The receiver's answer; null when none came.")
    error: str | None


class WebhookDeliveryOut(BaseModel):
    id: str = Field(description="Sent as `Webhook-Id`: the same on every try of this event.")
    event: str
    status: Literal["pending", "delivered", "failed"]
    attempts: list[WebhookAttemptOut]
    next_attempt_at: datetime | None
    delivered_at: datetime | None


class HistoryOut(Shown):
    """Which of its session's messages a run loaded: the newest `config.max_history_messages`
    (all when null), cut so no tool result goes without the assistant message that asked for
    it. They open the run's `messages`, and the model got them."""

    stored: int = Field(description="How many messages the session held when the run started.")
    sent: int = Field(description="How many of them, the newest, the run loaded and sent.")
    first_position: int = Field(
        description="The first loaded message's place in the session (counted from 0; "
        "`stored` when none was loaded)."
    )


# A schema apart from the request's `RunConfig`, whose defaults rightly make its fields optional.
class RunConfigOut(RunConfig, Shown):
    """How the run executes, every value shown as stored."""


class RunOut(BaseModel):
    """A run, whole."""

    id: str
    status: ShownStatus
    agent: str
    current_agent: str
    session_id: str | None
    tenant: str = Field(description="The tenant the run belongs to: its creator's.")
    created_by: str | None = Field(
        description="The name of the principal that created the run (null for runs stored "
        "before runs recorded it)."
    )
    input: list[dict[str, Any]] = Field(
        description="The input as posted, as messages (a string is one user message)."
    )
    context: dict[str, Any] = Field(description="The context variables as posted.")
    config: RunConfigOut
    metadata: dict[str, Any]
    output_schema: dict[str, Any] | None = Field(
        description="The run's own JSON Schema for its final answer, as posted (null: its "
        "agents' output types, if any, decide)."
    )
    final_output: Any = Field(
        description="Once completed: the final answer's text, or, with structured output "
        "(an agent's output type or the run's `output_schema`), its validated JSON value."
    )
    messages: list[dict[str, Any]] = Field(
        description="The whole conversation: the session's history the run loaded (see "
        "`history`), the input, and every new message."
    )
    history: HistoryOut | None = Field(
        description="The session's messages the run loaded; null for a run without a session "
        "and until the run starts."
    )
    steps: list[Step]
    usage: Usage
    pending_approvals: list[PendingApproval]
    decisions: list[DecisionOut]
    error: RunErrorOut | None
    tools: list[RunToolOut] = Field(description="The run's own tools, which the client runs.")
    webhook: str | None
    webhook_deliveries: list[WebhookDeliveryOut]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, run: Run, deliveries: Sequence[WebhookDelivery] = ()) -> RunOut:
        state = RunState.from_json(run.state) if run.state is not None else None
        return cls(
            id=run.id,
            status=RunStatus(run.status).value,
            agent=run.agent,
            current_agent=run.current_agent,
            session_id=run.session_id,
            tenant=run.tenant,
            created_by=None if run.principal is None else run.principal.get("name"),
            input=list(run.input),
            context=run.context,
            config=RunConfigOut.model_validate(run.config),
            metadata=run.run_metadata,
            output_schema=run.output_schema,
            final_output=state.final_output if state else run.final_output,
            messages=state.messages if state else list(run.input),
            history=_history(state) if state and run.session_id is not None else None,
            steps=[_step(step.agent, step.duration_ms, step.tool_calls) for step in state.steps]
            if state
            else [],
            usage=state.usage if state else Usage(),
            pending_approvals=[
                PendingApproval.model_validate(p, from_attributes=True)
                for p in state.pending_approvals
            ]
            if state and run.status == RunStatus.PENDING_APPROVAL
            else [],
            decisions=[DecisionOut.model_validate(d, from_attributes=True) for d in state.decisions]
            if state
            else [],
            error=RunErrorOut.model_validate(run.error) if run.error else None,
            tools=[RunToolOut.model_validate(spec) for spec in run.tools or []],
            webhook=run.webhook,
            webhook_deliveries=[
                WebhookDeliveryOut.model_validate(
                    {
                        "id": d.id,
                        "event": d.event,
                        "status": d.status,
                        "attempts": d.attempts,
                        "next_attempt_at": d.next_attempt_at if d.status == "pending" else None,
                        "delivered_at": d.delivered_at,
                    }
                )
                for d in deliveries
            ],
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
        )


def _history(state: RunState) -> HistoryOut:
    return HistoryOut(
        stored=state.history_from + state.history_length,
        sent=state.history_length,
        first_position=state.history_from,
    )


def _step(agent: str, duration_ms: float, calls: list[ToolCall]) -> Step:
    return Step(
        agent=agent,
        duration_ms=round(duration_ms),
        tool_calls=[
            ToolCallOut(
                call_id=call.call_id,
                name=call.name,
                arguments=call.arguments,
                output=call.output,
                status=_call_status(call),
                truncated=call.truncated,
            )
            for call in calls
        ],
    )


def _call_status(call: ToolCall) -> ToolCallStatus:
    match call.status:
        case CallStatus.AWAITING_APPROVAL:
            return "in_doubt" if call.in_doubt else "pending"
        case CallStatus.QUEUED:
            return "pending"
        case CallStatus.RUNNING:
            return "running"
        case CallStatus.COMPLETED | CallStatus.FAILED | CallStatus.REJECTED | CallStatus.CANCELLED:
            return call.status.value  # type: ignore[return-value]
