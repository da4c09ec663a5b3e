"""Errors of the runs domain. They know nothing of HTTP: `app/api/errors.py` maps them."""

from __future__ import annotations

from app.engine.errors import EngineError


class NotFound(EngineError):
    """No such resource."""


class RunNotFound(NotFound):
    """No run has that id."""


class SessionNotFound(NotFound):
    """No session has that id."""


class NotAllowed(EngineError):
    """The caller may not do this (decide a call of that tool, say)."""


class RunNotEnded(EngineError):
    """The run is queued, running or waiting for a person: only an ended run is forgotten."""


class SessionBusy(EngineError):
    """The session has an unfinished run."""


class TooManyRuns(EngineError):
    """The tenant has as many queued and running runs as it may (TENANT_MAX_ACTIVE_RUNS)."""

    # Seconds to wait before asking again: about the time a short run takes to end.
    retry_after = 5


class IdempotencyKeyInUse(EngineError):
    """A request with this Idempotency-Key is still being processed; retry shortly."""


class IdempotencyKeyReused(EngineError):
    """This Idempotency-Key was used with a different request body."""


class LeaseLost(EngineError):
    """Another executor owns this run now; this one must stop driving it."""
