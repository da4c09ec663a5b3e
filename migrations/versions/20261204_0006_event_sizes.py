"""Each event's size beside it: an event stream pages the log by size without reading it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 19:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("size", sa.Integer(), server_default="0", nullable=False))
    data = "data" if op.get_bind().dialect.name == "sqlite" else "data::text"
    op.execute(f"UPDATE run_events SET size = length({data})")


def downgrade() -> None:
    with op.batch_alter_table("run_events", schema=None) as batch_op:
        batch_op.drop_column("size")
