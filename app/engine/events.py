"""What the engine reports while a run advances: stored events and live text deltas."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from app.engine.state import ApprovalRequest, Decision, Message, RunState, ToolCall


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One event of the run's log, named as in the contract; `data` is JSON-compatible."""

    name: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Text as the model generates it during `turn` (1-based); never stored."""

    turn: int
    text: str


class RunObserver(Protocol):
    """Receives a run's progress while `Engine.advance` runs.

    `checkpoint` marks a durable point: `state` now reflects `events`, and a process that stores
    both may crash afterwards and lose nothing. It is awaited inside a shielded scope, so a
    cancelled run still finishes the write in flight.
    """

    async def on_delta(self, delta: TextDelta) -> None: ...

    async def checkpoint(self, state: RunState, events: list[RunEvent]) -> None: ...


class NullObserver:
    """An observer that keeps nothing, for callers that only want the turn's result."""

    async def on_delta(self, delta: TextDelta) -> None:
        return None

    async def checkpoint(self, state: RunState, events: list[RunEvent]) -> None:
        return None


def message(msg: Message) -> RunEvent:
    return RunEvent("message", {"message": msg})


def tool_call_started(call: ToolCall, agent: str) -> RunEvent:
    data = {"call_id": call.call_id, "name": call.name, "arguments": call.arguments, "agent": agent}
    return RunEvent("tool_call.started", data)


def tool_call_completed(call: ToolCall) -> RunEvent:
    data = {"call_id": call.call_id, "name": call.name, "output": call.output}
    return RunEvent("tool_call.completed", {**data, "status": call.status.value})


def agent_changed(from_agent: str, to_agent: str) -> RunEvent:
    return RunEvent("agent.changed", {"from": from_agent, "to": to_agent})


def approval_requested(request: ApprovalRequest) -> RunEvent:
    return RunEvent("approval.requested", asdict(request))


def approval_decided(decision: Decision) -> RunEvent:
    data = asdict(decision)
    data["decided_at"] = decision.decided_at.isoformat()
    return RunEvent("approval.decided", data)
