"""The database: engine creation, transactions, and the differences between SQLite and PostgreSQL.

Everything that differs between the two dialects lives here, so repositories stay one code path.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg
from sqlalchemy import event, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from app.engine.text import storable_json
from app.store import signals
from app.store.models import Readiness


class DatabaseInUse(RuntimeError):
    """Another agent-runs process is using this SQLite database."""


class DatabaseFull(RuntimeError):
    """The database cannot grow: its disk, or its own size limit, is full."""


# With less room than this a SQLite file is as good as full: the next run may not fit.
MIN_FREE_BYTES = 16 * 1024 * 1024
_READINESS = "readyz"


# Faults of the connection or of the server's availability (a restart, a failover, a full
# connection table), raised by asyncpg itself when they happen while connecting.
_UNREACHABLE: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    socket.gaierror,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    sa_exc.TimeoutError,  # no pooled connection came free
)
# The server answers but cannot take writes now: its disk, memory or connection table is
# full (class 53), or it is read-only (a standby, or a read-only default).
_POSTGRES_UNWRITABLE: tuple[tuple[type[Exception], str], ...] = (
    (asyncpg.DiskFullError, "the database's disk is full"),
    (asyncpg.TooManyConnectionsError, "the database has no connection to spare"),
    (asyncpg.InsufficientResourcesError, "the database is out of resources"),
    (asyncpg.ReadOnlySQLTransactionError, "the database is read-only"),
)
# SQLite's OperationalError also means a wrong statement; these codes are the machine's.
_SQLITE_FAULTS = {
    "SQLITE_BUSY": "the database is busy",
    "SQLITE_LOCKED": "the database is busy",
    "SQLITE_FULL": "the database or its disk is full",
    "SQLITE_READONLY": "the database is read-only",
    "SQLITE_IOERR": "the database cannot read or write its file",
}
# A pooled connection idle this long is pinged before use: the server may have restarted or
# dropped it meanwhile. Busy connections skip the ping's two round trips.
IDLE_PING_SECONDS = 2.0


DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.SQLAlchemyError,
    asyncpg.PostgresError,
    sqlite3.Error,
    *_UNREACHABLE,
)
"""What talking to the database may raise, for handlers that tell faults from bugs."""


def unavailable_cause(exc: BaseException) -> str | None:
    """Why the database cannot serve now (away, full, read-only), when that is what `exc`
    says; None when the statement itself was wrong, which no retry mends."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return "the connection to the database was lost"
    # The driver's own error sits under SQLAlchemy's adaptation of it.
    cause: BaseException | None = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    for _ in range(3):
        if cause is None:
            return None
        if isinstance(cause, sqlite3.Error):
            name = getattr(cause, "sqlite_errorname", "")
            return next(
                (fault for code, fault in _SQLITE_FAULTS.items() if name.startswith(code)), None
            )
        for error_type, fault in _POSTGRES_UNWRITABLE:
            if isinstance(cause, error_type):
                return fault
        if isinstance(cause, _UNREACHABLE):
            return "the database is not answering"
        cause = cause.__cause__
    return None


def is_transient(exc: BaseException) -> bool:
    """True when the database was away, full or read-only, not when the statement was wrong:
    worth another try later."""
    return unavailable_cause(exc) is not None


def normalize_url(url: str) -> URL:
    """Accept the usual spellings (`postgresql://`, `sqlite:///`) and pick the async drivers."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed


class Database:
    """An async engine and its session factory; `session_scope()` owns commit and rollback."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        """Up to `pool_size` connections on PostgreSQL, kept open: a burst of transactions
        waits its turn rather than open connections to close again (each costs the server a
        process, and more than a few per core buy nothing)."""
        self.url = normalize_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self._lock_file: int | None = None
        options: dict[str, Any] = {}
        if self.is_sqlite:
            # One process serves a SQLite file, and one connection serves that process: writers
            # never wait on each other's locks, and transactions are short.
            options.update(pool_size=1, max_overflow=0, pool_timeout=60)
        else:
            options.update(pool_size=pool_size, max_overflow=0)
        self.engine: AsyncEngine = create_async_engine(
            self.url, json_deserializer=load_stored_json, **options
        )
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _configure_sqlite)
            event.listen(self.engine.sync_engine, "begin", _begin_sqlite)
        else:
            event.listen(self.engine.sync_engine.pool, "checkin", _note_idle_since)
            event.listen(self.engine.sync_engine.pool, "checkout", self._ping_if_idle)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # Reads on PostgreSQL run each statement on its own: READ COMMITTED gives a statement
        # its own snapshot inside a transaction too, so BEGIN and COMMIT would buy nothing but
        # two round trips.
        readers = self.engine
        if not self.is_sqlite:
            readers = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._readers = async_sessionmaker(readers, expire_on_commit=False)
        # Where committed writes' signals go: the process's wake-up hub, once it is built.
        self.on_commit: signals.SignalSink | None = None

    @asynccontextmanager
    async def session_scope(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed when the block ends, rolled back on error.
        Once it has committed, the signals its writes recorded go to `on_commit`."""
        async with self.sessions() as session:
            async with session.begin():
                yield session
            recorded = signals.take(session)
        await self.committed(recorded)

    async def committed(self, recorded: Sequence[signals.Signal]) -> None:
        """Tell `on_commit` what a committed write signals."""
        if recorded and self.on_commit is not None:
            await self.on_commit(recorded)

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[asyncpg.Connection]:
        """PostgreSQL only: a pooled connection as asyncpg's own, outside any transaction (a
        statement commits itself), for the hot statements of `app.store.direct`. A fault
        comes as SQLAlchemy's `DBAPIError`, as from every other statement, and a connection
        that may be broken leaves the pool."""
        async with self.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert isinstance(driver, asyncpg.Connection)
            try:
                yield driver
            except BaseException as exc:
                # Refused by the server on a sound connection, or else cut off mid-statement
                # (lost, cancelled, a bug between two statements): its state is unknown.
                lost = driver.is_closed() or not isinstance(exc, asyncpg.PostgresError)
                if lost:
                    with anyio.CancelScope(shield=True):
                        await connection.invalidate()
                if isinstance(exc, (asyncpg.PostgresError, asyncpg.InterfaceError, *_UNREACHABLE)):
                    raise sa_exc.DBAPIError(None, None, exc, connection_invalidated=lost) from exc
                raise

    @asynccontextmanager
    async def read_scope(self) -> AsyncIterator[AsyncSession]:
        """A session that only reads: what it sees is as of each statement."""
        async with self.statement_scope() as session:
            yield session

    @asynccontextmanager
    async def statement_scope(self) -> AsyncIterator[AsyncSession]:
        """A session whose statements each commit on their own on PostgreSQL: for a write that
        is one statement, BEGIN and COMMIT would cost two round trips more (SQLite: one
        transaction, BEGIN IMMEDIATE keeping writes in order, and no round trips to spare)."""
        if self.is_sqlite:
            async with self.session_scope() as session:
                yield session
            return
        async with self._readers() as session:
            yield session

    def _ping_if_idle(
        self, dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any
    ) -> None:
        # `pool_pre_ping` would ping before every transaction; under load that doubles the
        # round trips of a short one. A connection that fails the ping is replaced at once.
        idle_since = record.info.pop(_IDLE_SINCE, None)
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            self.engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise sa_exc.DisconnectionError(f"a pooled connection was lost: {exc}") from exc

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def check_writable(self, now: datetime) -> None:
        """Raise unless the database takes a committed write now, and SQLite has room to grow:
        a database that answers reads but refuses writes cannot serve."""
        if self.is_sqlite:
            await self._check_sqlite_room()
        async with self.session_scope() as session:
            written = await session.execute(
                update(Readiness).where(Readiness.name == _READINESS).values(checked_at=now)
            )
            if getattr(written, "rowcount", 0) == 0:  # the first check, or after a wipe
                insert = sqlite_insert if self.is_sqlite else postgresql_insert
                row = insert(Readiness).values(name=_READINESS, checked_at=now)
                await session.execute(row.on_conflict_do_nothing())

    async def _check_sqlite_room(self) -> None:
        async with self.engine.connect() as connection:
            pragmas = ("page_size", "page_count", "max_page_count", "freelist_count")
            size, pages, most, free = [
                (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                for name in pragmas
            ]
        if (most - pages + free) * size < MIN_FREE_BYTES:
            raise DatabaseFull("the database is full (at its PRAGMA max_page_count)")
        path = self.sqlite_path
        if path is not None:
            disk = os.statvfs(path.parent)
            if disk.f_bavail * disk.f_frsize < MIN_FREE_BYTES:
                raise DatabaseFull(f"the disk holding {path} is full")

    def claim_sqlite_file(self) -> None:
        """Refuse to start when another process holds this SQLite file (SQLite serves one)."""
        path = self.sqlite_path
        if path is None:
            return
        lock_path = f"{path}.lock"
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise DatabaseInUse(
                f"another agent-runs process is using the SQLite database {path}. SQLite serves "
                "one process (`agent-runs serve` with its embedded executor); for several "
                "processes or workers, use PostgreSQL (DATABASE_URL=postgresql://...)."
            ) from None
        self._lock_file = descriptor

    @property
    def sqlite_path(self) -> Path | None:
        database = self.url.database
        if not self.is_sqlite or not database or database == ":memory:":
            return None
        return Path(database).resolve()

    def release_sqlite_file(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    async def dispose(self) -> None:
        await self.engine.dispose()
        self.release_sqlite_file()


_IDLE_SINCE = "agent_runs.idle_since"

# Escapes of a NUL or of a UTF-16 surrogate: a surrogate pair (an emoji, as JSON encoders write
# it) or a lone half, which no answer can carry.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


async def lock_for_transaction(session: AsyncSession, name: str) -> None:
    """Hold a lock named `name` until the transaction ends, so transactions that count
    something before adding to it take turns. SQLite's write transaction (BEGIN IMMEDIATE)
    holds the whole database already."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})


async def try_lock_for_transaction(session: AsyncSession, name: str) -> bool:
    """Take the lock named `name` until the transaction ends if nobody holds it; False (at once,
    without waiting) if another transaction does. SQLite's write transaction holds the whole
    database, and one process serves it."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    taken = await session.scalar(
        text("SELECT pg_try_advisory_xact_lock(hashtext(:name))"), {"name": name}
    )
    return bool(taken)


def load_stored_json(text: str) -> Any:
    """A JSON column's value as read. Rows an older release stored may hold a NUL or a lone
    surrogate; they are read with those replaced, so no stored row makes a read fail."""
    value = json.loads(text)
    if _SUSPECT_ESCAPE.search(text) is not None:
        value = storable_json(value)
    return value


def _note_idle_since(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_IDLE_SINCE] = time.monotonic()


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Python's sqlite3 starts transactions late (at the first write) and its own way, which
    # makes a SAVEPOINT commit what came before it; SQLAlchemy emits BEGIN itself instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _begin_sqlite(connection: Any) -> None:
    # IMMEDIATE takes the write lock at once, so a transaction never fails midway to upgrade it.
    connection.exec_driver_sql("BEGIN IMMEDIATE")
