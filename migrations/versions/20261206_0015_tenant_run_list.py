"""A tenant's runs, newest first, from an index of their own: `GET /runs` of any caller but an
admin lists its tenant's runs, and without it PostgreSQL sorted all of them (1.6 s at 1.1
million runs in the suite's W6).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 21:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_tenant_seq", "runs", ["tenant", "seq"])


def downgrade() -> None:
    op.drop_index("ix_runs_tenant_seq", table_name="runs")
