"""Guardrails: the reason a guardrail gives when it asks a person, shown with its pending item.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 06:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("approvals", sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    # SQLite drops a column in place (3.35+): no copy of the approvals table.
    op.drop_column("approvals", "reason")
