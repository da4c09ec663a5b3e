"""Each step and each tool output stored once: a run's steps but its last in rows of their own,
a tool message's content named by the event that carried it, a `message` event's message by
its place among the run's messages.

Events stored before keep their data: they read as they are, and rewriting every `message`
event would give the space back only after a VACUUM, on either database.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 09:00:00.000000
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BATCH = 200

_runs = sa.table(
    "runs", sa.column("seq", sa.Integer), sa.column("id", sa.String), sa.column("state", sa.JSON)
)
_run_steps = sa.table(
    "run_steps",
    sa.column("run_id", sa.String),
    sa.column("position", sa.Integer),
    sa.column("step", sa.JSON),
)
_run_messages = sa.table(
    "run_messages",
    sa.column("run_id", sa.String),
    sa.column("position", sa.Integer),
    sa.column("message", sa.JSON),
    sa.column("content_event", sa.Integer),
)
_run_events = sa.table(
    "run_events",
    sa.column("id", sa.Integer),
    sa.column("run_id", sa.String),
    sa.column("seq", sa.Integer),
    sa.column("data", sa.JSON),
    sa.column("message_at", sa.Integer),
)


def upgrade() -> None:
    op.add_column("run_messages", sa.Column("content_event", sa.Integer(), nullable=True))
    op.add_column("run_events", sa.Column("message_at", sa.Integer(), nullable=True))
    op.create_table(
        "run_steps",
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("step", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_steps_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "position", name=op.f("pk_run_steps")),
    )
    for run_id, state in _states():
        steps = state.get("steps", [])
        if len(steps) < 2:
            continue
        rows = [
            {"run_id": run_id, "position": position, "step": step}
            for position, step in enumerate(steps[:-1])
        ]
        op.get_bind().execute(sa.insert(_run_steps), rows)
        _store(run_id, {**state, "steps": steps[-1:]})


def downgrade() -> None:
    bind = op.get_bind()
    # Contents back into their messages first: the events that name a message then copy it.
    held = bind.execute(
        sa.select(
            _run_messages.c.run_id,
            _run_messages.c.position,
            _run_messages.c.message,
            _run_events.c.data,
        )
        .join(
            _run_events,
            sa.and_(
                _run_events.c.run_id == _run_messages.c.run_id,
                _run_events.c.seq == _run_messages.c.content_event,
            ),
        )
        .where(_run_messages.c.content_event.is_not(None))
    ).all()
    for run_id, position, message, data in held:
        content = _json(data).get("output")
        bind.execute(
            sa.update(_run_messages)
            .where(_run_messages.c.run_id == run_id, _run_messages.c.position == position)
            .values(message={**_json(message), "content": content})
        )
    referring = bind.execute(
        sa.select(_run_events.c.id, _run_messages.c.message).join(
            _run_messages,
            sa.and_(
                _run_messages.c.run_id == _run_events.c.run_id,
                _run_messages.c.position == _run_events.c.message_at,
            ),
        )
    ).all()
    for event_id, message in referring:
        bind.execute(
            sa.update(_run_events)
            .where(_run_events.c.id == event_id)
            .values(data={"message": _json(message)})
        )
    for run_id, state in _states():
        earlier = [
            _json(step)
            for (step,) in bind.execute(
                sa.select(_run_steps.c.step)
                .where(_run_steps.c.run_id == run_id)
                .order_by(_run_steps.c.position)
            )
        ]
        steps = [*earlier, *_outputs_inline(run_id, state)]
        state.pop("output_events", None)
        _store(run_id, {**state, "steps": steps})
    op.drop_table("run_steps")
    with op.batch_alter_table("run_events") as batch_op:
        batch_op.drop_column("message_at")
    with op.batch_alter_table("run_messages") as batch_op:
        batch_op.drop_column("content_event")


def _outputs_inline(run_id: str, state: dict[str, Any]) -> list[dict[str, Any]]:
    """The state's steps with each output an event holds back in its call."""
    steps = []
    for step in state.get("steps", []):
        calls = []
        for call in step.get("tool_calls", []):
            if "output_event" in call:
                data = op.get_bind().scalar(
                    sa.select(_run_events.c.data).where(
                        _run_events.c.run_id == run_id, _run_events.c.seq == call["output_event"]
                    )
                )
                output = (_json(data) or {}).get("output")
                call = {
                    ("output" if key == "output_event" else key): (
                        output if key == "output_event" else value
                    )
                    for key, value in call.items()
                }
            calls.append(call)
        steps.append({**step, "tool_calls": calls})
    return steps


def _states() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every run with a state, a batch at a time, each state as a dict."""
    last = -1
    while True:
        batch = (
            op.get_bind()
            .execute(
                sa.select(_runs.c.seq, _runs.c.id, _runs.c.state)
                .where(_runs.c.seq > last, _runs.c.state.is_not(None))
                .order_by(_runs.c.seq)
                .limit(BATCH)
            )
            .all()
        )
        if not batch:
            return
        for seq, run_id, state in batch:
            last = seq
            parsed = _json(state)
            if parsed is not None:
                yield run_id, parsed


def _store(run_id: str, state: dict[str, Any]) -> None:
    op.get_bind().execute(sa.update(_runs).where(_runs.c.id == run_id).values(state=state))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
