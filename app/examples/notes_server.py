"""The example MCP server: notes kept in memory, over stdio (`python -m app.examples.notes_server`).

Built with the `mcp` SDK's FastMCP. The bundled `librarian` agent offers its tools: reading is
read-only (repeated after a crash, never asked about), adding is not (a person approves it).
"""

from __future__ import annotations

from mcp.server.fastmcp import FastMCP
from mcp.types import ToolAnnotations

server = FastMCP("notes", log_level="WARNING")
notes: dict[str, str] = {"wifi": "The guest network is 'visitors'; its password is on the fridge."}


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def find_note(title: str) -> str:
    """Read the note of that title."""
    return notes.get(title.lower(), f"There is no note titled {title!r}.")


@server.tool()
def add_note(title: str, text: str) -> str:
    """Add a note, or replace the note of that title."""
    notes[title.lower()] = text
    return f"Noted under {title!r}."


if __name__ == "__main__":
    server.run("stdio")
