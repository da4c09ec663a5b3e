"""What a command checks before it starts, each refusal one line naming the setting and why.

`serve`, `worker` and `migrate` run these first, so a wrong setting is reported the same way by
each, before anything is migrated, listened on or driven.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import anyio
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from app.engine import Engine
from app.engine.registry import AgentRegistry
from app.runtime.agents import (
    AgentsModule,
    AgentsModuleError,
    build_engine,
    build_mcp_servers,
    load_agents_module,
)
from app.settings import Settings
from app.store.database import Database, normalize_url
from app.store.migrations import SchemaNotReady, ensure_schema


class StartupError(RuntimeError):
    """A setting that stops the process from starting; the message is one line for people."""


def database_url(url: str) -> URL:
    """The URL, or why it cannot be one: a scheme nobody serves."""
    try:
        parsed = normalize_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        scheme = url.partition("://")[0] if "://" in url else url
        raise StartupError(
            f"DATABASE_URL: unknown scheme {scheme!r}; use sqlite:///path/to/file.db or "
            "postgresql://user:password@host/database"
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StartupError(
            f"DATABASE_URL: {parsed.get_backend_name()} is not supported; use SQLite or PostgreSQL"
        )
    file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if file and file != ":memory:" and not (folder := Path(file).resolve().parent).is_dir():
        raise StartupError(f"DATABASE_URL: the folder of the SQLite file does not exist: {folder}")
    return parsed


async def check_database(url: str) -> None:
    """The database answers: the server and the database exist (PostgreSQL), the file can be
    opened (SQLite)."""
    parsed = database_url(url)
    shown = parsed.render_as_string(hide_password=True)
    db = Database(url, pool_size=1)
    try:
        try:
            async with db.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            cause = getattr(exc, "orig", None) or exc
            raise StartupError(
                f"DATABASE_URL ({shown}): cannot connect: {_one_line(cause)}"
            ) from exc
    finally:
        await db.dispose()


async def check_schema(url: str) -> None:
    """PostgreSQL's schema is at the latest migration (SQLite's is migrated by `serve`)."""
    db = Database(url, pool_size=1)
    try:
        await ensure_schema(db)
    except SchemaNotReady as exc:
        raise StartupError(f"DATABASE_URL: {exc}") from exc
    finally:
        await db.dispose()


def check_port(host: str, port: int) -> None:
    """Nothing else listens where `serve` will."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As uvicorn binds: a port left in TIME_WAIT by the last run is free to take.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"PORT: {host}:{port} is in use by another process; stop it, or choose "
                    "another with --port or PORT"
                ) from None
            raise StartupError(
                f"HOST/PORT: cannot listen on {host}:{port}: {exc.strerror}"
            ) from None


def agents(settings: Settings, *, connect: bool = True) -> AgentsModule:
    """The agents module, loaded and its agents checked: names unique, tools per agent too,
    the MCP servers they name defined, and (with `connect`, once those servers listed their
    tools) no two tools of an agent sharing a name. A server that cannot be reached is no
    refusal: it is unavailable until it can be. Without `connect` (in an event loop already
    running) the runtime's own start makes that last check."""
    path = settings.agents_module
    try:
        module = load_agents_module(path)
        registry = AgentRegistry(module.agents)
        if connect and any(agent.mcp_servers for agent in registry):
            # The engine binds the servers (an undefined name is refused) and connects them.
            anyio.run(_connect_once, build_engine(settings, module))
        else:
            defined = build_mcp_servers(settings)
            for agent in registry:
                agent.bind_mcp_servers(defined)
    except AgentsModuleError as exc:
        raise StartupError(str(exc)) from exc
    except ValueError as exc:
        raise StartupError(f"AGENTS_MODULE={path!r}: {exc}") from exc
    return module


async def _connect_once(engine: Engine) -> None:
    try:
        await engine.connect()
    finally:
        await engine.aclose()


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())
