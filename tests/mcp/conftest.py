"""Real MCP servers for the tests (FastMCP, from tests/mcp/tools_server.py): over stdio, started
by the client, and over streamable HTTP in a process of their own on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.engine.mcp import MCPServer
from tests.conftest import free_port
from tests.engine.conftest import make_engine, provider  # noqa: F401  (fixtures)
from tests.processes.conftest import until

SERVER_SCRIPT = Path(__file__).with_name("tools_server.py")


@dataclass
class Journal:
    path: Path

    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text().splitlines()
        return [e for e in map(json.loads, lines) if kind is None or e["kind"] == kind]


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "mcp-journal.jsonl")


def stdio_server(journal: Journal, name: str = "db", **options: Any) -> MCPServer:
    return MCPServer(
        name,
        command=sys.executable,
        args=[str(SERVER_SCRIPT)],
        env={"MCP_JOURNAL": str(journal.path)},
        **options,
    )


@dataclass
class HttpServer:
    """The test server over streamable HTTP, in its own process; `stop` and `start` again."""

    journal: Journal
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        env = {**os.environ, "MCP_JOURNAL": str(self.journal.path)}
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), "http", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        until(self._listening, 20, "the MCP server to listen")

    def _listening(self) -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1)
        except httpx.TransportError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def http_server(journal: Journal) -> Iterator[HttpServer]:
    server = HttpServer(journal)
    server.start()
    try:
        yield server
    finally:
        server.stop()
