"""An agent with MCP tool servers, for the service's MCP tests (AGENTS_MODULE): `db` is the
test server over stdio (tests/mcp/tools_server.py), `down` an HTTP server nothing answers.

The servers are made once, at import: each app built on this module connects them at its start
and closes them at its stop, so tests use them one app after another. The test server journals
its calls to MCP_JOURNAL when that names a file, else to nowhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from app import Agent, MCPServer, tool

TOOLS_SERVER = Path(__file__).parent.parent / "mcp" / "tools_server.py"

db = MCPServer(
    "db",
    command=sys.executable,
    args=[str(TOOLS_SERVER)],
    env={"MCP_JOURNAL": os.environ.get("MCP_JOURNAL", os.devnull)},
    tools=["lookup", "put", "delete_row"],
)
# Port 9 (discard) is closed on the loopback: the connection is refused at once.
down = MCPServer("down", url="http://127.0.0.1:9/mcp", connect_timeout_seconds=2)


@tool(effect="read")
def today() -> str:
    """Today's date."""
    return "2026-12-06"


records = Agent(
    name="records",
    description="Keeps records in the db.",
    instructions="Look records up and change them when asked.",
    tools=[today],
    mcp_servers=[db, down],
)

agents = [records]
