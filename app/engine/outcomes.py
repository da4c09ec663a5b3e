"""What one turn led to. The loop dispatches on these with `match`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.engine.events import RunEvent
from app.engine.state import ApprovalRequest, RunError, RunState


@dataclass(frozen=True, slots=True)
class RunAgain:
    """The tool results are in the history; the same agent takes the next turn."""


@dataclass(frozen=True, slots=True)
class HandedOff:
    """The tool results are in the history; `to_agent` takes the next turn."""

    from_agent: str
    to_agent: str


@dataclass(frozen=True, slots=True)
class Completed:
    """The model gave its final answer: text, or the validated value of structured output."""

    output: Any


@dataclass(frozen=True, slots=True)
class Paused:
    """Some tool calls wait for a decision; the run rests at `pending_approval`."""

    pending: list[ApprovalRequest]


@dataclass(frozen=True, slots=True)
class Failed:
    """The run ended with an error."""

    error: RunError


TurnOutcome = RunAgain | HandedOff | Completed | Paused | Failed

_NAMES: dict[type, str] = {
    RunAgain: "run_again",
    HandedOff: "handed_off",
    Completed: "completed",
    Paused: "paused",
    Failed: "failed",
}


def goes_on(outcome: TurnOutcome) -> bool:
    """Whether the run takes another turn at once: it neither rests nor ends."""
    return isinstance(outcome, RunAgain | HandedOff)


def outcome_name(outcome: TurnOutcome) -> str:
    """A label for how a turn ended (metrics, traces)."""
    return _NAMES[type(outcome)]


@dataclass(frozen=True, slots=True)
class TurnResult:
    """The state after the turn, how the turn ended, and every event it produced."""

    state: RunState
    outcome: TurnOutcome
    events: list[RunEvent]
