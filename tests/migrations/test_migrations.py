"""The Alembic migrations build exactly the models' schema, and go down and up again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from app.store.database import Database
from app.store.migrations import downgrade, upgrade
from app.store.models import Base

pytestmark = pytest.mark.anyio

STAMP = datetime(2026, 12, 1, tzinfo=UTC)

TABLES = {"runs", "run_events", "sessions", "session_messages", "idempotency_keys"}


def differences(sync_connection: Any) -> list[Any]:
    context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def table_names(sync_connection: Any) -> set[str]:
    return set(inspect(sync_connection).get_table_names())


async def test_models_and_migrations_agree(migrated_url: str) -> None:
    db = Database(migrated_url)
    try:
        async with db.engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await db.dispose()


async def test_downgrade_to_base_and_upgrade_again(migrated_url: str) -> None:
    db = Database(migrated_url)
    try:
        await downgrade(db.engine, "base")
        async with db.engine.connect() as connection:
            assert not (await connection.run_sync(table_names)) & TABLES
        await upgrade(db.engine, "head")
        async with db.engine.connect() as connection:
            assert await connection.run_sync(table_names) >= TABLES
            assert await connection.run_sync(differences) == []
    finally:
        await db.dispose()


async def test_rows_stored_before_tenants_are_defaults_and_keep_their_messages(
    migrated_url: str,
) -> None:
    """Sessions are copied on SQLite to change their key: their messages must survive it."""
    db = Database(migrated_url)
    try:
        await downgrade(db.engine, "0008")
        async with db.engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO sessions (id, created_at, updated_at) VALUES ('s1', :t, :t)"),
                {"t": STAMP},
            )
            await connection.execute(
                text(
                    "INSERT INTO session_messages (session_id, position, message, created_at)"
                    ' VALUES (\'s1\', 0, \'{"role": "user", "content": "hi"}\', :t)'
                ),
                {"t": STAMP},
            )
            await connection.execute(
                text(
                    "INSERT INTO idempotency_keys (owner, scope, key, request_hash, created_at)"
                    " VALUES ('ui', 'runs.create', 'k', 'h', :t)"
                ),
                {"t": STAMP},
            )
        await upgrade(db.engine, "head")
        async with db.engine.connect() as connection:
            sessions = (await connection.execute(text("SELECT tenant, id FROM sessions"))).all()
            messages = (
                await connection.execute(text("SELECT tenant, session_id FROM session_messages"))
            ).all()
            keys = (
                await connection.execute(text("SELECT tenant, key FROM idempotency_keys"))
            ).all()
        assert [tuple(row) for row in sessions] == [("default", "s1")]
        assert [tuple(row) for row in messages] == [("default", "s1")]
        assert [tuple(row) for row in keys] == [("default", "k")]
    finally:
        await db.dispose()
