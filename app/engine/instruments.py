"""Hooks for measuring the loop: turns, model calls and tool calls.

The engine knows no metrics library and no tracer; whoever runs it passes `Instruments` (the
executor's feed Prometheus and OpenTelemetry). Each hook wraps the work it measures, so a
tracer's span has the work's duration and nests the way the work does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol


@dataclass
class Measure:
    """What the measured work came to: `ok` unless the engine says otherwise (`measuring`
    tells errors and cancellations that escape the work apart)."""

    outcome: str = "ok"


class Instruments(Protocol):
    def turn(self, run_id: str, turn: int, agent: str) -> AbstractContextManager[Measure]: ...

    def model_call(self, run_id: str, model: str) -> AbstractContextManager[Measure]: ...

    def tool_call(
        self, run_id: str, tool: str, call_id: str
    ) -> AbstractContextManager[Measure]: ...


class NoInstruments:
    """Measures nothing."""

    def turn(self, run_id: str, turn: int, agent: str) -> AbstractContextManager[Measure]:
        return measuring()

    def model_call(self, run_id: str, model: str) -> AbstractContextManager[Measure]:
        return measuring()

    def tool_call(self, run_id: str, tool: str, call_id: str) -> AbstractContextManager[Measure]:
        return measuring()


@contextmanager
def measuring() -> Iterator[Measure]:
    """A measure whose outcome, left `ok` by the work, tells an error or a cancellation that
    escaped it apart: what every instrument records."""
    measure = Measure()
    try:
        yield measure
    except Exception:
        if measure.outcome == "ok":
            measure.outcome = "error"
        raise
    except BaseException:
        if measure.outcome == "ok":
            measure.outcome = "cancelled"  # the run was cancelled, or this process stops
        raise
