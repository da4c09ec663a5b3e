"""A run's whole engine state: JSON-serializable, so any process can continue it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, with_config

from app.engine.config import RunConfig
from app.engine.text import storable_text

Message = dict[str, Any]
"""A Chat Completions message, stored exactly as sent to the model."""

ErrorCode = Literal[
    "max_turns_exceeded",
    "timeout",
    "model_error",
    "tool_error",
    "output_invalid",
    "guardrail_tripped",
    "internal_error",
]
DecisionSource = Literal["human", "handler", "remember"]
PendingKind = Literal["approval", "external", "guardrail"]
"""Why a pending item waits: a call needing approval, a call the client runs, a guardrail."""
GuardrailStage = Literal["input", "output"]


class RunStatus(enum.StrEnum):
    """Where a run is: waiting for an executor, driven by one, parked for a person, or ended."""

    # The engine sets every status but `queued`, the store's (new, decided, or handed back).

    QUEUED = "queued"  # waits for an executor to claim it
    RUNNING = "running"  # an executor drives it; another `advance` continues it
    PENDING_APPROVAL = "pending_approval"  # waits for decisions on its pending calls
    COMPLETED = "completed"  # ended with a final answer (text, or a validated JSON value)
    FAILED = "failed"  # ended with `error`
    CANCELLED = "cancelled"  # ended by a cancel

    @property
    def ended(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class CallStatus(enum.StrEnum):
    """The life of one tool call; the last four are final."""

    QUEUED = "queued"  # will run (no approval needed, or approved)
    AWAITING_APPROVAL = "awaiting_approval"  # waits for a decision
    RUNNING = "running"  # started, no result stored yet
    COMPLETED = "completed"  # ran and returned
    FAILED = "failed"  # bad call or the tool raised; the output is the error text
    REJECTED = "rejected"  # not run: a decision said no
    CANCELLED = "cancelled"  # not run, or abandoned, because the run ended

    @property
    def final(self) -> bool:
        return self in _FINAL_CALL_STATUSES


_FINAL_CALL_STATUSES = frozenset(
    {CallStatus.COMPLETED, CallStatus.FAILED, CallStatus.REJECTED, CallStatus.CANCELLED}
)


# The API shows this very type and always sends every count: its document says so (required).
@with_config(ConfigDict(json_schema_serialization_defaults_required=True))
@dataclass(slots=True)
class Usage:
    """Tokens and requests summed over every model call of the run."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    # Described for the API too.
    cached_tokens: Annotated[
        int, Field(description="Of prompt_tokens: read from the prompt cache.")
    ] = 0
    reasoning_tokens: Annotated[
        int, Field(description="Of completion_tokens: spent on reasoning.")
    ] = 0

    def add(self, other: Usage) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens
        self.cached_tokens += other.cached_tokens
        self.reasoning_tokens += other.reasoning_tokens


@dataclass(slots=True)
class ToolCall:
    """One tool call of a turn, from the model's request to its result."""

    call_id: str
    name: str
    raw_arguments: str  # as the model sent them
    arguments: dict[str, Any] | None  # parsed; None when the JSON did not parse
    status: CallStatus
    output: str | None = None
    in_doubt: bool = False  # started before a crash, with no stored result
    handoff_to: str | None = None  # the agent this call hands off to
    tool_failed: bool = False  # bad arguments, unknown tool or a raising tool
    truncated: bool = False  # the output was cut at the engine's limit
    external: bool = False  # the client runs it: it waits for a decision carrying its output

    def message(self) -> Message:
        return {"role": "tool", "tool_call_id": self.call_id, "content": self.output or ""}


@dataclass(slots=True)
class StepRecord:
    """One turn: a model call and the tool calls it asked for."""

    agent: str
    duration_ms: float = 0.0
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(slots=True)
class ApprovalRequest:
    """A tool call waiting for a decision, as an approval UI or handler sees it."""

    call_id: str
    tool: str
    arguments: dict[str, Any]
    agent: str
    in_doubt: bool = False
    kind: PendingKind = "approval"
    reason: str | None = None  # a guardrail's question to the person (`kind: "guardrail"`)


@dataclass(slots=True)
class Decision:
    """A decision on a call that needed approval, kept for audit."""

    call_id: str
    approved: bool
    reason: str | None
    arguments: dict[str, Any]
    decided_by: str | None
    decided_at: datetime
    source: DecisionSource
    output: str | None = None  # the call's result, supplied by a person or the client


@dataclass(slots=True)
class RunTool:
    """A tool the client runs, declared by the run itself (`POST /runs` `tools`)."""

    name: str
    description: str
    parameters: dict[str, Any]  # the JSON Schema of its arguments, as posted


@dataclass(slots=True)
class GuardrailAsk:
    """A guardrail that asked a person (`AskHuman`), and once decided, the answer."""

    name: str
    stage: GuardrailStage
    agent: str  # whose guardrail it is
    reason: str
    approved: bool | None = None  # None while it waits

    @property
    def item_id(self) -> str:
        """Its pending item's id, in place of a call id: one per guardrail and stage."""
        return f"guardrail_{self.stage}_{self.name}"


@dataclass(slots=True)
class HeldOutput:
    """A final answer kept while output guardrails check it, or a person one of them asked.

    Stored, so a run taken over mid-check checks the same answer again rather than asking
    the model for another one.
    """

    value: Any


@dataclass(slots=True)
class RunError:
    code: ErrorCode
    message: str

    def __post_init__(self) -> None:
        # Messages quote what failed (a server's answer, a tool's exception): stored, they
        # must hold only text every database carries.
        self.message = storable_text(self.message)


@dataclass(slots=True)
class RunState:
    """Everything needed to continue a run in any process.

    While `open_step` is true the last step's tool calls are still being decided or run; their
    tool messages join `messages` (in call order) once every call has a result.
    """

    agent: str
    current_agent: str
    config: RunConfig
    messages: list[Message]
    history_length: int = 0  # messages loaded from earlier runs; the rest are this run's
    history_from: int = 0  # the first loaded message's place in its session: earlier ones held back
    variables: dict[str, Any] = field(default_factory=dict)
    tools: list[RunTool] = field(default_factory=list)  # offered by every agent of the run
    run_id: str | None = None
    session_id: str | None = None
    status: RunStatus = RunStatus.RUNNING
    turns: int = 0
    steps: list[StepRecord] = field(default_factory=list)
    open_step: bool = False
    usage: Usage = field(default_factory=Usage)
    decisions: list[Decision] = field(default_factory=list)
    remembered_tools: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0
    output_schema: dict[str, Any] | None = None  # the run's own, in place of its agents' types
    output_repairs: int = 0  # final answers sent back for not validating, of `output_retries`
    final_output: Any = None  # text, or the validated JSON value of structured output
    held_output: HeldOutput | None = None  # the final answer while output guardrails decide
    guardrail_asks: list[GuardrailAsk] = field(default_factory=list)  # of the stage in progress
    error: RunError | None = None

    @property
    def new_messages(self) -> list[Message]:
        """This run's messages: its input and everything after, without the loaded history."""
        return self.messages[self.history_length :]

    @property
    def current_calls(self) -> list[ToolCall]:
        """The tool calls of the turn in progress (empty between turns)."""
        return self.steps[-1].tool_calls if self.open_step else []

    @property
    def pending_approvals(self) -> list[ApprovalRequest]:
        agent = self.steps[-1].agent if self.open_step else self.current_agent
        calls = [
            ApprovalRequest(
                call.call_id,
                call.name,
                call.arguments or {},
                agent,
                call.in_doubt,
                "external" if call.external else "approval",
            )
            for call in self.current_calls
            if call.status is CallStatus.AWAITING_APPROVAL
        ]
        asks = [
            ApprovalRequest(
                ask.item_id, ask.name, {}, ask.agent, kind="guardrail", reason=ask.reason
            )
            for ask in self.guardrail_asks
            if ask.approved is None
        ]
        return [*calls, *asks]

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict that `RunState.from_json` restores."""
        return _STATE_ADAPTER.dump_python(self, mode="json")  # type: ignore[no-any-return]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        return _STATE_ADAPTER.validate_python(data)


_STATE_ADAPTER = TypeAdapter(RunState)
