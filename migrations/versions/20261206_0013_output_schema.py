"""Structured output: a run's own `output_schema`, kept until an executor starts the run.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 13:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("output_schema", sa.JSON(), nullable=True))


def downgrade() -> None:
    # SQLite drops a column in place (3.35+): no copy of the runs table.
    op.drop_column("runs", "output_schema")
