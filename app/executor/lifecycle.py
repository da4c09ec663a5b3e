"""Changes of a run's status that both the API and the executor make, with their events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.engine import Engine, RunState
from app.engine.events import RunEvent
from app.executor import webhooks
from app.store.approvals import ApprovalRepository
from app.store.models import Run
from app.store.runs import EventRecord
from app.store.sessions import SessionRepository
from app.store.status import Status


def now() -> datetime:
    return datetime.now(UTC)


def lifecycle_event(run: Run, name: str, state: RunState | None = None) -> EventRecord:
    """`run.queued`, `run.started`, ... with the contract's data."""
    usage = state.usage if state is not None else None
    data: dict[str, Any] = {
        "run_id": run.id,
        "status": run.status,
        "current_agent": run.current_agent,
        "error": run.error,
        "usage": {
            "requests": usage.requests if usage else 0,
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "total_tokens": usage.total_tokens if usage else 0,
            "cached_tokens": usage.cached_tokens if usage else 0,
            "reasoning_tokens": usage.reasoning_tokens if usage else 0,
        },
    }
    return name, data


def event_records(events: list[RunEvent]) -> list[EventRecord]:
    return [(event.name, event.data) for event in events]


def load_state(run: Run) -> RunState | None:
    return RunState.from_json(run.state) if run.state is not None else None


async def save_to_session(db_session: AsyncSession, run: Run, state: RunState | None) -> None:
    """Append the run's new messages to its session's conversation."""
    if run.session_id is None or state is None:
        return
    sessions = SessionRepository(db_session)
    await sessions.ensure(run.session_id, now())
    await sessions.append(run.session_id, state.new_messages, run.id, now())


async def cancel_resting_run(
    db_session: AsyncSession, engine: Engine, run: Run
) -> list[EventRecord]:
    """Cancel a queued or pending_approval run at once (its row must be locked)."""
    state = load_state(run)
    records: list[EventRecord] = []
    if state is not None and not state.status.ended:
        records += event_records(engine.cancel(state))
        run.state = state.to_json()
    run.status = Status.CANCELLED
    run.finished_at = now()
    run.lease_token += 1  # fences out any driver that still thinks it holds the run
    run.claimed_by = None
    run.lease_expires_at = None
    records.append(lifecycle_event(run, "run.cancelled", state))
    await save_to_session(db_session, run, state)
    await ApprovalRepository(db_session).withdraw(run.id)
    webhooks.enqueue(db_session, run, "run.cancelled", run.finished_at)
    return records
