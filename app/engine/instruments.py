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
    """What the measured work came to: `ok` unless the engine says otherwise (an instrument
    tells errors and cancellation that escape the work apart itself)."""

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
        return _nothing()

    def model_call(self, run_id: str, model: str) -> AbstractContextManager[Measure]:
        return _nothing()

    def tool_call(self, run_id: str, tool: str, call_id: str) -> AbstractContextManager[Measure]:
        return _nothing()


@contextmanager
def _nothing() -> Iterator[Measure]:
    yield Measure()
