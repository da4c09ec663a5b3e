"""An MCP server built with the SDK's FastMCP, for the tests: over stdio when run as a script,
over streamable HTTP at /mcp with `http PORT`.

Each call appends a line to the journal file named by MCP_JOURNAL (with the process id), so a
test sees which process ran what, and how often, across kills and restarts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from mcp.server.fastmcp import Context, FastMCP, Image
from mcp.types import ToolAnnotations

server = FastMCP("test-tools")
READ = ToolAnnotations(readOnlyHint=True)
# One-pixel PNG.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def journal(kind: str, **data: Any) -> None:
    path = os.environ.get("MCP_JOURNAL")
    if not path:
        return
    line = json.dumps({"kind": kind, "pid": os.getpid(), **data}) + "\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


@server.tool(annotations=READ)
def lookup(key: str) -> str:
    """Look a key up."""
    journal("lookup", key=key)
    return f"value of {key}"


@server.tool(annotations=ToolAnnotations(idempotentHint=True, destructiveHint=False))
def put(key: str, value: str) -> str:
    """Store a value under a key (the same twice is no change)."""
    journal("put", key=key)
    return f"stored {key}"


@server.tool()
def delete_row(row: int) -> str:
    """Delete a row for good."""
    journal("delete_row", row=row)
    return f"deleted row {row}"


@server.tool(annotations=READ)
def broken() -> str:
    """Always fails."""
    raise ValueError("the table is locked")


@server.tool(annotations=READ)
def slow(seconds: float) -> str:
    """Takes its time."""
    journal("slow.started", seconds=seconds)
    time.sleep(seconds)
    return "slow done"


@server.tool(annotations=READ)
def crash_reading() -> str:
    """A read that kills the server (stdio) mid-call."""
    journal("crash_reading")
    os._exit(3)


@server.tool()
def crash_writing() -> str:
    """A write that kills the server (stdio) mid-call."""
    journal("crash_writing")
    os._exit(3)


@server.tool()
def slow_write(seconds: float) -> str:
    """A write that takes its time."""
    journal("slow_write.started", seconds=seconds)
    time.sleep(seconds)
    journal("slow_write.done")
    return "written"


@server.tool(annotations=READ)
def whoami(ctx: Context[Any, Any, Any]) -> str:
    """Who the HTTP request says calls (its X-User header)."""
    request = ctx.request_context.request
    return str(request.headers.get("x-user", "nobody")) if request is not None else "stdio"


@server.tool(annotations=READ)
def stats() -> dict[str, int]:
    """Row counts, as structured content."""
    return {"rows": 3, "tables": 1}


@server.tool(annotations=READ)
def picture() -> Image:
    """A tiny picture."""
    return Image(data=PIXEL, format="png")


@server.tool(annotations=READ)
async def grow(ctx: Context[Any, Any, Any]) -> str:
    """Adds the tool `fresh` and tells the client its list changed."""

    def fresh() -> str:
        """A tool added while connected."""
        return "fresh result"

    server.add_tool(fresh, annotations=READ)
    await ctx.session.send_tool_list_changed()
    return "grown"


if __name__ == "__main__":
    journal("started", argv=sys.argv[1:])
    if sys.argv[1:2] == ["http"]:
        server.settings.port = int(sys.argv[2])
        server.run("streamable-http")
    else:
        server.run("stdio")
