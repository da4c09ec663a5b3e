"""What a committed write tells whoever waits for it.

The repositories record a signal with each write that someone may wait for (a run changed,
work queued, a cancel, webhook deliveries); `Database.session_scope()` hands them to the
process's sink once the transaction has committed, and drops them when it rolls back. No caller
signals by hand, so none can forget to, or signal a write that did not happen.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class RunChanged:
    """The run's row changed, with events up to `event_seq` when known, and `status` (None:
    not known without reading it)."""

    run_id: str
    event_seq: int | None = None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class WorkQueued:
    """A run may be claimable now: queued (new, decided, handed back), or a run ended that an
    earlier one of its session held back."""


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """A running run is to stop, in whichever process drives it."""

    run_id: str


@dataclass(frozen=True, slots=True)
class DeliveriesQueued:
    """Webhook deliveries were stored and are due."""


Signal = RunChanged | WorkQueued | CancelRequested | DeliveriesQueued
SignalSink = Callable[[Sequence[Signal]], Awaitable[None]]

_PENDING = "agent_runs.signals"


def record(session: AsyncSession, signal: Signal) -> None:
    """Send `signal` once the session's transaction has committed."""
    session.info.setdefault(_PENDING, []).append(signal)


def take(session: AsyncSession) -> list[Signal]:
    """The signals recorded in the session, each once (a repeated one kept at its first)."""
    recorded: list[Signal] = session.info.pop(_PENDING, [])
    return list(dict.fromkeys(recorded))
