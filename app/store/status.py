"""The groups of statuses that the store's rules are written in (the statuses are the engine's
`RunStatus`, the contract's)."""

from __future__ import annotations

from app.engine.state import RunStatus

ENDED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
UNFINISHED = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PENDING_APPROVAL})
RESTING = ENDED | {RunStatus.PENDING_APPROVAL}
"""Where `?wait=S` stops waiting: nothing happens until someone acts."""
