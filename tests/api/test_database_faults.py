"""A database that is full or read-only: 503 `unavailable` with the cause, and `/readyz` says so
(contract, "Text that can be stored, and hostile clients")."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.store.database import Database, unavailable_cause
from tests.api.conftest import Client, ClientFactory, services_of
from tests.conftest import is_postgres

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"


def assert_unavailable(response: httpx.Response, cause: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["retry-after"] == "1"
    problem = response.json()
    assert problem["type"] == "/problems/unavailable"
    assert cause in problem["detail"]


async def sqlite_pragma(db: Database, pragma: str) -> None:
    # One connection serves a SQLite database: a pragma set on it holds for every request.
    # Set on the driver's connection: the service's own BEGIN IMMEDIATE fails when read-only.
    async with db.engine.connect() as connection:
        raw = await connection.get_raw_connection()
        assert raw.driver_connection is not None  # a connection just checked out is open
        await raw.driver_connection.execute(f"PRAGMA {pragma}")


@pytest.fixture
async def read_only(client: Client) -> AsyncIterator[Client]:
    """The database turned read-only under the running service."""
    db = services_of(client).db
    if not is_postgres(str(db.url)):
        await sqlite_pragma(db, "query_only = ON")
        yield client
        await sqlite_pragma(db, "query_only = OFF")
        return
    name = db.url.database
    async with db.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(
            text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        )
    await db.engine.dispose()  # new connections take the database's new default
    try:
        yield client
    finally:
        async with db.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("SET default_transaction_read_only = off"))
            await autocommit.execute(
                text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
            )
        await db.engine.dispose()


async def test_a_read_only_database_answers_503_and_is_not_ready(read_only: Client) -> None:
    created = await read_only.post("/runs", json={"agent": "calc", "input": "x"})
    ready = await read_only.get("/readyz")

    assert_unavailable(created, "read-only")
    assert_unavailable(ready, "read-only")
    assert (await read_only.get("/healthz")).status_code == 200


async def test_ready_again_once_writes_are_taken(client: Client) -> None:
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}  # the row exists now


async def test_a_full_sqlite_database_answers_503_and_is_not_ready(
    make_client: ClientFactory, db_url: str, tmp_path: Path
) -> None:
    if is_postgres(db_url):
        pytest.skip("PostgreSQL's full disk is covered by the classification below")
    # A file of its own: what other tests stored and deleted in the shared one would leave
    # free pages that an insert takes before it needs the file to grow.
    own_file = f"sqlite+aiosqlite:///{tmp_path / 'full.db'}"
    async with make_client(with_executor=False, database_url=own_file) as client:
        db = services_of(client).db
        await sqlite_pragma(db, "VACUUM")  # no free page left: the next one needs the file to grow
        async with db.engine.connect() as connection:
            pages = (await connection.exec_driver_sql("PRAGMA page_count")).scalar_one()
        await sqlite_pragma(db, f"max_page_count = {pages}")
        big = {"agent": "calc", "input": "x", "metadata": {"pad": "x" * 200_000}}

        created = await client.post("/runs", json=big)
        ready = await client.get("/readyz")
        await sqlite_pragma(db, "max_page_count = 4294967294")

    assert_unavailable(created, "full")
    assert_unavailable(ready, "full")


def adapted(error: Exception) -> DBAPIError:
    """A driver error as SQLAlchemy raises it."""
    return DBAPIError("INSERT ...", None, error)


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (asyncpg.DiskFullError("could not extend file"), "disk is full"),
        (asyncpg.OutOfMemoryError("out of memory"), "out of resources"),
        (asyncpg.ReadOnlySQLTransactionError("read-only transaction"), "read-only"),
        (asyncpg.CannotConnectNowError("starting up"), "not answering"),
        (sqlite3.OperationalError("database or disk is full"), None),  # no code: not assumed
        (asyncpg.DataError("invalid byte sequence"), None),
        (sqlite3.IntegrityError("constraint failed"), None),
    ],
)
def test_faults_of_the_machine_are_told_from_refused_statements(
    error: Exception, cause: str | None
) -> None:
    found = unavailable_cause(adapted(error))
    if cause is None:
        assert found is None
    else:
        assert found is not None
        assert cause in found


def test_sqlite_s_own_codes_name_the_cause() -> None:
    full = sqlite3.connect(":memory:")
    full.execute("CREATE TABLE t (x)")
    full.execute("PRAGMA max_page_count = 1")
    with pytest.raises(sqlite3.Error) as refused:
        full.execute("INSERT INTO t VALUES (zeroblob(100000))")
    assert unavailable_cause(adapted(refused.value)) == "the database or its disk is full"
