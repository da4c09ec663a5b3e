"""Tenants: every run, session, approval request, idempotency key and webhook delivery belongs
to one (existing rows to `default`); session ids are per tenant; a run keeps the principal that
created it and its place in the queue (existing runs: the order they came in).

SQLite alters a table by copying it, and dropping a table that another table's foreign key
cascades from would empty that other table: the session messages lose their foreign key
before their sessions are copied, and get the new one after.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 19:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

DEFAULT = sa.text("'default'")


def _tenant_column() -> sa.Column[str]:
    return sa.Column("tenant", sa.String(length=64), server_default=DEFAULT, nullable=False)


def upgrade() -> None:
    # Added in place (never a copy of `runs`: see above), with defaults for the rows there.
    op.add_column("runs", _tenant_column())
    op.add_column("runs", sa.Column("principal", sa.JSON(), nullable=True))
    op.add_column(
        "runs",
        sa.Column("queue_rank", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.execute("UPDATE runs SET queue_rank = seq")
    op.create_index("ix_runs_queue_rank_seq", "runs", ["queue_rank", "seq"])
    op.create_index("ix_runs_status_queue_rank", "runs", ["status", "queue_rank"])
    op.create_index("ix_runs_tenant_status_queue_rank", "runs", ["tenant", "status", "queue_rank"])
    for table in ("approvals", "webhook_deliveries"):
        op.add_column(table, _tenant_column())
    op.create_index("ix_approvals_tenant_status_seq", "approvals", ["tenant", "status", "seq"])

    with op.batch_alter_table("idempotency_keys", recreate="always") as batch_op:
        batch_op.add_column(_tenant_column())
        batch_op.drop_constraint("pk_idempotency_keys", type_="primary")
        batch_op.create_primary_key("pk_idempotency_keys", ["tenant", "owner", "scope", "key"])

    with op.batch_alter_table(
        "session_messages", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint("fk_session_messages_session_id_sessions", type_="foreignkey")
    with op.batch_alter_table("sessions") as batch_op:
        batch_op.add_column(_tenant_column())
        batch_op.drop_constraint("pk_sessions", type_="primary")
        batch_op.create_primary_key("pk_sessions", ["tenant", "id"])
    with op.batch_alter_table(
        "session_messages", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.add_column(_tenant_column())
        batch_op.drop_constraint("uq_session_messages_session_id_position", type_="unique")
        batch_op.create_unique_constraint(
            "uq_session_messages_tenant_session_id_position", ["tenant", "session_id", "position"]
        )
        batch_op.create_foreign_key(
            "fk_session_messages_tenant_sessions",
            "sessions",
            ["tenant", "session_id"],
            ["tenant", "id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    """Back to one tenant: rows of any other tenant would clash with `default`'s (a session id,
    an idempotency key), so they are deleted, with their runs."""
    for table in ("session_messages", "sessions", "idempotency_keys", "runs"):
        op.execute(f"DELETE FROM {table} WHERE tenant <> 'default'")

    with op.batch_alter_table(
        "session_messages", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint("fk_session_messages_tenant_sessions", type_="foreignkey")
        batch_op.drop_constraint("uq_session_messages_tenant_session_id_position", type_="unique")
        batch_op.create_unique_constraint(
            "uq_session_messages_session_id_position", ["session_id", "position"]
        )
        batch_op.drop_column("tenant")
    with op.batch_alter_table("sessions") as batch_op:
        batch_op.drop_constraint("pk_sessions", type_="primary")
        batch_op.create_primary_key("pk_sessions", ["id"])
        batch_op.drop_column("tenant")
    with op.batch_alter_table(
        "session_messages", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.create_foreign_key(
            "fk_session_messages_session_id_sessions",
            "sessions",
            ["session_id"],
            ["id"],
            ondelete="CASCADE",
        )

    with op.batch_alter_table("idempotency_keys", recreate="always") as batch_op:
        batch_op.drop_constraint("pk_idempotency_keys", type_="primary")
        batch_op.create_primary_key("pk_idempotency_keys", ["owner", "scope", "key"])
        batch_op.drop_column("tenant")

    op.drop_index("ix_approvals_tenant_status_seq", table_name="approvals")
    for table in ("approvals", "webhook_deliveries"):
        op.execute(f"ALTER TABLE {table} DROP COLUMN tenant")

    op.drop_index("ix_runs_tenant_status_queue_rank", table_name="runs")
    op.drop_index("ix_runs_status_queue_rank", table_name="runs")
    op.drop_index("ix_runs_queue_rank_seq", table_name="runs")
    # Dropped in place: SQLite's copy of `runs` would empty every table that cascades from it.
    for column in ("queue_rank", "principal", "tenant"):
        op.execute(f"ALTER TABLE runs DROP COLUMN {column}")
