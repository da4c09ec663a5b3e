"""What both the API and the executor do around a run's status changes: the clock, the engine's
events as records, the session's conversation, and cancelling a resting run."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.engine import Engine, RunState
from app.engine.events import RunEvent
from app.store.approvals import ApprovalRepository
from app.store.events import EventRecord
from app.store.lifecycle import RunLifecycle
from app.store.models import Run
from app.store.sessions import SessionRepository
from app.store.tenancy import Tenancy
from app.webhooks import outbox


def now() -> datetime:
    return datetime.now(UTC)


def event_records(events: list[RunEvent]) -> list[EventRecord]:
    return [(event.name, event.data) for event in events]


def load_state(run: Run) -> RunState | None:
    return RunState.from_json(run.state) if run.state is not None else None


async def save_to_session(db_session: AsyncSession, run: Run, state: RunState | None) -> None:
    """Append the run's new messages to its session's conversation."""
    if run.session_id is None or state is None:
        return
    sessions = SessionRepository(db_session, run.tenant)
    await sessions.ensure(run.session_id, now())
    await sessions.append(run.session_id, state.new_messages, run.id, now())


async def cancel_resting_run(db_session: AsyncSession, engine: Engine, run: Run) -> None:
    """Cancel a queued or pending_approval run at once (its row must be locked)."""
    state = load_state(run)
    records: list[EventRecord] = []
    if state is not None and not state.status.ended:
        records += event_records(engine.cancel(state))
    stamp = now()
    stored = state.to_json() if state is not None else None
    await RunLifecycle(db_session).cancel(run, records, stamp, state=stored)
    await save_to_session(db_session, run, state)
    await ApprovalRepository(db_session, Tenancy(run.tenant)).withdraw(run.id)
    await outbox.enqueue(db_session, run, stamp)
