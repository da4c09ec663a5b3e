"""Errors the engine raises to its caller. They know nothing of HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class EngineError(Exception):
    """The engine was asked something it cannot do."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class ModelError(EngineError):
    """The model call failed."""


class UnknownAgent(EngineError):
    """No agent is registered under that name."""


class RunNotPending(EngineError):
    """The run is not waiting for approval decisions."""


class RunEnded(EngineError):
    """The run has already ended."""


class UnknownCall(EngineError):
    """The run has no pending tool call with that id."""


class CallAlreadyDecided(EngineError):
    """That tool call has already been decided."""


class InvalidDecision(EngineError):
    """The decision does not fit the call it decides."""

    def __init__(self, message: str, errors: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


class ToolClash(EngineError):
    """A tool of the run has the name of an agent's tool."""
