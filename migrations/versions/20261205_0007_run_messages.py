"""Each run's messages in rows of their own, written once; the state beside the run keeps no
conversation, and a session's history is referenced instead of copied into each run.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 06:00:00.000000
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BATCH = 200

_runs = sa.table(
    "runs", sa.column("seq", sa.Integer), sa.column("id", sa.String), sa.column("state", sa.JSON)
)
_run_messages = sa.table(
    "run_messages",
    sa.column("run_id", sa.String),
    sa.column("position", sa.Integer),
    sa.column("message", sa.JSON),
)


def upgrade() -> None:
    op.create_table(
        "run_messages",
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("message", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_messages_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "position", name=op.f("pk_run_messages")),
    )
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(
            "session_messages", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
    # A run stored before keeps all its messages, its history included, as rows of its own:
    # whether its session still holds that history cannot be known for sure.
    for run_id, state in _states():
        messages = state.pop("messages", [])
        state["message_count"] = len(messages)
        rows = [
            {"run_id": run_id, "position": position, "message": message}
            for position, message in enumerate(messages)
        ]
        if rows:
            op.get_bind().execute(sa.insert(_run_messages), rows)
        _store(run_id, state)


def downgrade() -> None:
    for run_id, state in _states():
        rows = op.get_bind().execute(
            sa.select(_run_messages.c.position, _run_messages.c.message)
            .where(_run_messages.c.run_id == run_id)
            .order_by(_run_messages.c.position)
        )
        own = {position: _json(message) for position, message in rows}
        history = _history(state, own)
        for step in state.get("steps", []):
            for call in step.get("tool_calls", []):
                if "output_at" in call:
                    call["output"] = (own.get(call.pop("output_at")) or {}).get("content")
        state["messages"] = [*history, *(own[p] for p in sorted(own) if p >= len(history))]
        state["history_length"] = min(state.get("history_length", 0), len(history))
        state.pop("message_count", None)
        state.pop("history_through", None)
        _store(run_id, state)
    op.drop_table("run_messages")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(
            "session_messages", recreate="always", table_kwargs={"sqlite_autoincrement": False}
        ):
            pass


def _history(state: dict[str, Any], own: dict[int, Any]) -> list[Any]:
    length = state.get("history_length", 0)
    if all(position in own for position in range(length)):
        return [own[position] for position in range(length)]
    through = state.get("history_through")
    # A run whose model saw only a session's newest messages holds those from `history_from`.
    first = state.get("history_from", 0)
    rows = op.get_bind().execute(
        sa.text(
            "SELECT message FROM session_messages WHERE session_id = :session"
            " AND position >= :first AND position < :end AND id <= :through ORDER BY position"
        ),
        {
            "session": state.get("session_id"),
            "first": first,
            "end": first + length,
            "through": through or 0,
        },
    )
    return [_json(message) for (message,) in rows]


def _states() -> Any:
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
