"""A run's event log as stored: rows numbered within the run, and the events of its status."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.engine.state import Usage
from app.store.models import StoredEvent

EventRecord = tuple[str, dict[str, Any]]
"""An event to store: its name and JSON data."""

_EVENTS = cast(Table, StoredEvent.__table__)
_NO_USAGE = asdict(Usage())


def status_event(
    name: str,
    run_id: str,
    status: str,
    current_agent: str,
    error: dict[str, Any] | None,
    state: dict[str, Any] | None,
) -> EventRecord:
    """`run.queued`, `run.started`, `run.completed`... with the contract's data; the usage is
    the stored state's (none before the run starts)."""
    usage = {**_NO_USAGE, **((state or {}).get("usage") or {})}
    data = {
        "run_id": run_id,
        "status": status,
        "current_agent": current_agent,
        "error": error,
        "usage": usage,
    }
    return name, data


async def insert_events(
    session: AsyncSession,
    run_id: str,
    last_seq: int,
    events: Sequence[EventRecord],
    now: datetime,
) -> None:
    """Store `events` as the run's events up to `last_seq`."""
    if not events:
        return
    first_seq = last_seq - len(events) + 1
    rows = [
        {
            "run_id": run_id,
            "seq": first_seq + i,
            "name": name,
            "data": data,
            "size": len(json.dumps(data)),
            "created_at": now,
        }
        for i, (name, data) in enumerate(events)
    ]
    await session.execute(insert(_EVENTS), rows)
