"""An agent whose tools come from an MCP server over stdio (tests/mcp/tools_server.py), for the
process tests (AGENTS_MODULE). The server journals its calls where the process tests' tools do
(TOOL_JOURNAL), so a test sees which call ran how often across kills and takeovers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from app import Agent, MCPServer

tools_server = MCPServer(
    "db",
    command=sys.executable,
    args=[str(Path(__file__).parents[1] / "mcp" / "tools_server.py")],
    env={"MCP_JOURNAL": os.environ.get("TOOL_JOURNAL", os.devnull)},
    approval="never",
)
ops = Agent(name="ops", description="Works on the database.", mcp_servers=[tools_server])
agents = [ops]
