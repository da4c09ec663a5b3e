"""Applying the Alembic migrations from code (`agent-runs migrate`, `serve`, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.database import Database

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))


class SchemaNotReady(RuntimeError):
    """The database schema is not at the latest migration."""


async def ensure_schema(db: Database) -> None:
    """SQLite is migrated on start so the first `serve` just works; PostgreSQL is migrated by
    `agent-runs migrate` (once, before the processes start) and only checked here."""
    if db.is_sqlite:
        await upgrade(db.engine)
        return
    async with db.engine.connect() as connection:
        current = await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if current != head:
        raise SchemaNotReady(
            f"the database is at migration {current or 'none'}, not {head}: "
            "run `agent-runs migrate` first"
        )
