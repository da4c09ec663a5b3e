"""Fixtures shared by every test: the anyio backend, the fake model over HTTP, the database.

The database is SQLite by default and PostgreSQL when TEST_DATABASE_URL is set. Its schema is
built by the Alembic migrations only, once per session; each test starts from empty tables.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import structlog
from sqlalchemy import delete

from app.store.database import Database
from app.store.migrations import downgrade, upgrade
from app.store.models import Base
from app.testing import FakeModel, FakeModelServer


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def plain_tracebacks() -> None:
    """structlog's development lines, with tracebacks printed plainly: the default renders every
    frame's locals, which takes seconds for one traceback and holds the event loop meanwhile."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.dev.set_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
        ]
    )


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeModelServer]:
    with FakeModelServer(FakeModel()) as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeModelServer) -> Iterator[FakeModel]:
    """The shared fake model, emptied for each test."""
    fake_server.fake.reset()
    yield fake_server.fake
    fake_server.fake.reset()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


@pytest.fixture(scope="session")
def migrated_url(database_url: str) -> str:
    """The test database with every migration applied (from scratch, whatever was there)."""

    async def rebuild() -> None:
        db = Database(database_url)
        try:
            await downgrade(db.engine, "base")
            await upgrade(db.engine, "head")
        finally:
            await db.dispose()

    anyio.run(rebuild)
    return database_url


@pytest.fixture
async def db_url(migrated_url: str) -> str:
    """The migrated test database, emptied before the test."""
    await empty_tables(migrated_url)
    return migrated_url


async def empty_tables(url: str) -> None:
    db = Database(url)
    try:
        async with db.session_scope() as session:
            for table in reversed(Base.metadata.sorted_tables):
                await session.execute(delete(table))
    finally:
        await db.dispose()


def in_ci() -> bool:
    """Under CI, a test whose tool is missing fails instead of skipping (.ci/run installs it)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def is_postgres(url: str) -> bool:
    return url.startswith("postgres")


ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
