"""Hardening: idempotency keys per caller, a run's turns beside its state, the readiness row.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 18:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("owner", sa.String(length=200), nullable=False, server_default="")
        )
        batch_op.drop_constraint("pk_idempotency_keys", type_="primary")
        batch_op.create_primary_key("pk_idempotency_keys", ["owner", "scope", "key"])
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.alter_column("owner", server_default=None)

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("turns", sa.Integer(), server_default="0", nullable=False))
    if op.get_bind().dialect.name == "sqlite":
        turns = "CAST(json_extract(state, '$.turns') AS INTEGER)"
    else:
        turns = "CAST(state ->> 'turns' AS INTEGER)"
    op.execute(f"UPDATE runs SET turns = {turns} WHERE state IS NOT NULL")

    op.create_table(
        "readiness",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_readiness")),
    )


def downgrade() -> None:
    op.drop_table("readiness")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("turns")
    op.execute("DELETE FROM idempotency_keys WHERE owner <> ''")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_constraint("pk_idempotency_keys", type_="primary")
        batch_op.create_primary_key("pk_idempotency_keys", ["scope", "key"])
        batch_op.drop_column("owner")
