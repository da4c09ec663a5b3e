"""Tools the client runs: a run keeps its own tools, and each pending item says what kind it is
(`approval`, `external`, `guardrail`), so `GET /approvals?kind=` can filter.

Columns are added and dropped in place: SQLite's copy of `runs` would empty every table that
cascades from it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("tools", sa.JSON(), nullable=True))
    # Every request stored before kinds existed asked for an approval.
    op.add_column(
        "approvals",
        sa.Column("kind", sa.String(length=20), server_default="approval", nullable=False),
    )
    op.create_index(
        "ix_approvals_tenant_kind_status_seq", "approvals", ["tenant", "kind", "status", "seq"]
    )


def downgrade() -> None:
    op.drop_index("ix_approvals_tenant_kind_status_seq", table_name="approvals")
    op.execute("ALTER TABLE approvals DROP COLUMN kind")
    op.execute("ALTER TABLE runs DROP COLUMN tools")
