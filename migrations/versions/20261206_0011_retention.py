"""Retention (`RUN_RETENTION`, `SESSION_RETENTION`, `IDEMPOTENCY_KEY_TTL`): the rows past their
age are found by index, oldest first, however many there are.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 12:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_status_finished_at", "runs", ["status", "finished_at"])
    op.create_index("ix_sessions_updated_at", "sessions", ["updated_at"])
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_index("ix_sessions_updated_at", table_name="sessions")
    op.drop_index("ix_runs_status_finished_at", table_name="runs")
