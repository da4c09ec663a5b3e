"""A run's event log as stored: rows numbered within the run, and the events of its status.

A `message` event carries a message the run stores as its own already: its row names the
message's place (`message_at`) instead of repeating it, and `expand_events` puts it back when
the log is read. Its `size` is that of the event as read, so a stream pages by what it sends."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.engine.state import Usage
from app.store.conversation import held_outputs, restored_message
from app.store.models import RunMessage, StoredEvent

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
    the stored state's (none before the run starts). `run.completed` carries the final output
    too (a structured one as its JSON value), so a stream's reader needs no other call."""
    usage = {**_NO_USAGE, **((state or {}).get("usage") or {})}
    data = {
        "run_id": run_id,
        "status": status,
        "current_agent": current_agent,
        "error": error,
        "usage": usage,
    }
    if status == "completed":
        data["final_output"] = (state or {}).get("final_output")
    return name, data


async def insert_events(
    session: AsyncSession,
    run_id: str,
    last_seq: int,
    events: Sequence[EventRecord],
    now: datetime,
    message_at: Mapping[int, int] | None = None,
) -> None:
    """Store `events` as the run's events up to `last_seq`; `message_at` names the events
    (by index) whose message the run holds at that place."""
    if not events:
        return
    first_seq = last_seq - len(events) + 1
    places = message_at or {}
    rows = [
        {
            "run_id": run_id,
            "seq": first_seq + i,
            "name": name,
            "data": {} if i in places else data,
            "size": len(json.dumps(data)),
            "message_at": places.get(i),
            "created_at": now,
        }
        for i, (name, data) in enumerate(events)
    ]
    await session.execute(insert(_EVENTS), rows)


async def expand_events(session: AsyncSession, events: Sequence[StoredEvent]) -> None:
    """Give events read from the store the data they were stored with: in one query for the
    messages they refer to, and one for the outputs those messages' contents are."""
    referring = [event for event in events if event.message_at is not None]
    if not referring:
        return
    wanted: dict[str, set[int]] = {}
    for event in referring:
        wanted.setdefault(event.run_id, set()).add(cast(int, event.message_at))
    rows = []
    for run_id, positions in wanted.items():
        result = await session.execute(
            select(RunMessage.position, RunMessage.message, RunMessage.content_event).where(
                RunMessage.run_id == run_id, RunMessage.position.in_(positions)
            )
        )
        rows += [(run_id, *row) for row in result.all()]
    # An output is carried by an earlier event, most often one of this very page.
    held: dict[str, dict[int, Any]] = {}
    for event in events:
        if event.name == "tool_call.completed" and event.message_at is None:
            held.setdefault(event.run_id, {})[event.seq] = event.data.get("output")
    missing: dict[str, set[int]] = {}
    for run_id, _, _, seq in rows:
        if seq is not None and seq not in held.get(run_id, {}):
            missing.setdefault(run_id, set()).add(seq)
    for run_id, seqs in missing.items():
        found = await held_outputs(session, [run_id], seqs)
        held.setdefault(run_id, {}).update(found.get(run_id, {}))
    messages = {
        (run_id, position): restored_message(message, seq, held.get(run_id, {}))
        for run_id, position, message, seq in rows
    }
    for event in referring:
        message = messages.get((event.run_id, cast(int, event.message_at)))
        set_committed_value(event, "data", {"message": message})
