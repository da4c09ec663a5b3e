"""A run's status as stored, and the groups of statuses that rules are written in."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """The run's `status` field of the contract."""

    QUEUED = "queued"  # waits for an executor (new, or resumed after decisions)
    RUNNING = "running"  # an executor holds its lease and drives it
    PENDING_APPROVAL = "pending_approval"  # parked until every pending call is decided
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ENDED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
UNFINISHED = frozenset({Status.QUEUED, Status.RUNNING, Status.PENDING_APPROVAL})
RESTING = ENDED | {Status.PENDING_APPROVAL}
"""Where `?wait=S` stops waiting: nothing happens until someone acts."""
