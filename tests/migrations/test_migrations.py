"""The Alembic migrations build exactly the models' schema, and go down and up again."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from app.store.database import Database
from app.store.migrations import downgrade, upgrade
from app.store.models import Base

pytestmark = pytest.mark.anyio

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
