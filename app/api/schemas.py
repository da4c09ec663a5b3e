"""HTTP shapes: request bodies and responses, so the OpenAPI document gives SDKs real types."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from app.engine import RunConfig
from app.engine.external import parameters_problems
from app.engine.output import InvalidSchema, schema_spec
from app.engine.state import PendingKind
from app.engine.text import UNSTORABLE, describe, storable_text
from app.engine.tools import TOOL_NAME_PATTERN, ApprovalMode, ToolEffect

# Re-exported: routes take every HTTP shape from this module.
from app.resources import DecisionOut
from app.resources import RunOut as RunOut
from app.services.runs import IfBusy

T = TypeVar("T")


class ChatMessage(BaseModel):
    """A Chat Completions message; fields beyond these are kept as sent."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


MAX_JSON_DEPTH = 64
MAX_INPUT_MESSAGES = 1000

JsonPath = tuple[str | int, ...]


def unstorable(value: Any, path: JsonPath = ()) -> tuple[JsonPath, str] | None:
    """Where a parsed body holds what parses but cannot be stored and answered, and why:
    NaN and Infinity (Python's parser takes them, JSON and PostgreSQL do not), nesting deeper
    than serializers go, and strings no database or model API carries (NUL, lone surrogates)."""
    if len(path) > MAX_JSON_DEPTH:
        return path, f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, float) and not math.isfinite(value):
        return path, "NaN and Infinity are not JSON numbers"
    if isinstance(value, str):
        found = UNSTORABLE.search(value)
        return None if found is None else (path, unstorable_message(found.group()))
    if isinstance(value, dict):
        for key, item in value.items():
            found = UNSTORABLE.search(key)
            if found is not None:
                return (*path, storable_text(key)), "a key with " + unstorable_message(
                    found.group()
                )
            problem = unstorable(item, (*path, key))
            if problem is not None:
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problem = unstorable(item, (*path, index))
            if problem is not None:
                return problem
    return None


def unstorable_message(character: str) -> str:
    return f"{describe(character)} cannot be stored: no database or model API carries it"


class Body(BaseModel):
    """A request body: unknown fields refused, and nothing accepted that could not be stored
    and served back exactly as sent."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        problem = unstorable(data)
        if problem is None:
            return data
        path, message = problem
        error = InitErrorDetails(
            type=PydanticCustomError("unstorable", message), loc=path, input=None
        )
        raise ValidationError.from_exception_data(cls.__name__, [error])


MAX_RUN_TOOLS = 128


class RunToolIn(BaseModel):
    """A tool the client runs: the model is offered it; a call parks the run until a decision
    brings its output."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=TOOL_NAME_PATTERN,
        description="1-64 of a-z A-Z 0-9 _ -, as a model API takes.",
    )
    description: str = Field("", max_length=4096, description="What the model is told it does.")
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description='The JSON Schema of its arguments ("type": "object").',
    )

    @model_validator(mode="after")
    def _valid_schema(self) -> RunToolIn:
        problems = parameters_problems(self.parameters)
        if problems:
            raise ValueError(f"tool {self.name!r}: {'; '.join(problems)}")
        return self


class CreateRun(Body):
    agent: str = Field(min_length=1, max_length=64, description="The agent the run starts with.")
    input: str | Annotated[list[ChatMessage], Field(max_length=MAX_INPUT_MESSAGES)] = Field(
        description="One user message, or Chat Completions messages "
        f"(at most {MAX_INPUT_MESSAGES}; the whole body at most MAX_REQUEST_BYTES).",
        min_length=1,
    )
    tools: list[RunToolIn] = Field(
        default_factory=list,
        max_length=MAX_RUN_TOOLS,
        description="Tools the client runs, offered by every agent the run goes through; a "
        "name an agent's tool (or handoff) has is refused.",
    )

    @field_validator("tools")
    @classmethod
    def _distinct_names(cls, tools: list[RunToolIn]) -> list[RunToolIn]:
        names = [tool.name for tool in tools]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"two tools are named {', '.join(map(repr, twice))}")
        return tools

    session_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:@-]+$",
        description="History is loaded before the run and its new messages saved after.",
    )
    context: dict[str, Any] = Field(
        default_factory=dict, description="Variables for tools and dynamic instructions."
    )
    config: RunConfig = Field(default_factory=RunConfig)
    metadata: dict[str, Any] = Field(default_factory=dict, description="Any JSON, kept as is.")
    if_busy: IfBusy = Field(
        "enqueue", description="What to do when the session already has an unfinished run."
    )
    webhook: str | None = Field(
        None,
        max_length=2048,
        description="Called (POST, signed) each time the run rests; its host must be in "
        "WEBHOOK_ALLOWED_HOSTS.",
    )

    output_schema: dict[str, Any] | None = Field(
        None,
        description="A JSON Schema the run's final answer must follow (in place of its agents' "
        "output types): `final_output` is then the validated JSON value.",
    )

    @field_validator("output_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            try:
                schema_spec(schema)
            except InvalidSchema as exc:
                raise ValueError(str(exc)) from exc
        return schema

    def input_value(self) -> str | list[dict[str, Any]]:
        if isinstance(self.input, str):
            return self.input
        # Exactly the fields the client sent: the ones it left out stay out, a null stays null.
        return [message.model_dump(exclude_unset=True) for message in self.input]


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(min_length=1, max_length=100)
    approved: bool
    reason: str | None = Field(None, max_length=2000, description="Told to the model on a reject.")
    arguments: dict[str, Any] | None = Field(
        None, description="Approve with these arguments instead (checked against the schema)."
    )
    remember: bool = Field(
        False, description="Approve this tool's other calls of the turn and later ones of the run."
    )
    output: str | None = Field(
        None,
        description="Approve with this as the call's result: the tool is not run (done by hand). "
        "Required to approve an external call.",
    )


class Decide(Body):
    decisions: list[DecisionIn] = Field(min_length=1, max_length=100)


class Page(BaseModel, Generic[T]):
    """A page of a list, newest first; pass `next_cursor` as `cursor` for the next one."""

    items: list[T]
    next_cursor: str | None


class RunPage(Page[RunOut]):
    """A page of runs."""


class ToolOut(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any] = Field(description="The JSON schema of the arguments.")
    effect: ToolEffect
    needs_approval: ApprovalMode
    external: bool = Field(description="The client runs it: a call waits for its output.")
    server: str | None = Field(None, description="The MCP server it is a tool of; null: Python.")


class MCPServerOut(BaseModel):
    name: str
    transport: Literal["http", "stdio"]
    status: Literal["available", "unavailable"] = Field(
        description="`unavailable`: it cannot be reached now (its tools are not offered); it is "
        "tried again in the background."
    )
    error: str | None = Field(description="Why it is unavailable.")


class AgentOut(BaseModel):
    name: str
    description: str
    model: str
    tools: list[ToolOut]
    handoffs: list[str]
    output_schema: dict[str, Any] | None = Field(
        description="The JSON Schema of the agent's structured final answer (its "
        "`output_type`); null: it answers with text."
    )
    mcp_servers: list[MCPServerOut] = Field(
        description="The MCP servers whose tools it offers (listed among `tools`)."
    )
    input_guardrails: list[str] = Field(
        description="Its input guardrails' names: they check a run it starts before the model."
    )
    output_guardrails: list[str] = Field(
        description="Its output guardrails' names: they check the final answer of a run it ends."
    )


class ApprovalOut(BaseModel):
    """A tool call that waits (or waited) for a human, with what a decision card shows."""

    run_id: str
    tenant: str = Field(description="The run's tenant (admins list several).")
    call_id: str
    tool: str
    agent: str
    kind: PendingKind = Field(
        description="`approval`: a call to approve; `external`: a call the client runs (answer "
        "with its output); `guardrail`: a guardrail asks a person."
    )
    arguments: dict[str, Any]
    reason: str | None = Field(
        description="What the guardrail asks the person (`kind: guardrail`); null for calls."
    )
    in_doubt: bool = Field(description="Started before a crash with no stored result.")
    status: Literal["pending", "decided"]
    requested_at: datetime
    decision: DecisionOut | None
    last_messages: list[dict[str, Any]]


class ApprovalPage(Page[ApprovalOut]):
    """A page of approval requests."""


class AgentPage(Page[AgentOut]):
    """A page of agents."""


class SessionOut(BaseModel):
    id: str
    messages: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime


class MeOut(BaseModel):
    name: str
    tenant: str
    roles: list[str] = Field(
        description="`approver`, `approver:<tool>`, `admin`, and any other a token names."
    )


class TenantErased(BaseModel):
    tenant: str
    runs: int = Field(description="Runs forgotten, each with everything of it.")
    sessions: int
    idempotency_keys: int = Field(description="Keys no run held (a run's go with it).")


class Health(BaseModel):
    status: Literal["ok", "ready"]


class ProblemError(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem: every 4xx and 5xx answer has this shape."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemError] | None = None
    error_id: str | None = None
