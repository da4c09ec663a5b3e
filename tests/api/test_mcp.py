"""MCP tool servers over HTTP: `GET /agents` lists an agent's MCP tools with their server,
effect and approval rule beside its Python tools, and its servers with their status; one that
cannot be reached is `unavailable`, with the reason, and offers no tools."""

from __future__ import annotations

from typing import Any

import pytest

from app.settings import Settings
from app.testing import FakeModel, call, text
from tests.api.conftest import ClientFactory, client_factory

pytestmark = pytest.mark.anyio

MCP_AGENTS = "tests.api.mcp_agents"


@pytest.fixture
def make_mcp_client(settings: Settings) -> ClientFactory:
    return client_factory(settings, MCP_AGENTS, agents_module=MCP_AGENTS)


def db_tool(name: str, description: str, types: dict[str, str], **rules: str) -> dict[str, Any]:
    """A tool of the `db` server as listed: its schema as FastMCP writes it (with titles)."""
    return {
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "title": f"{name}Arguments",
            "properties": {
                field: {"title": field.capitalize(), "type": kind} for field, kind in types.items()
            },
            "required": list(types),
        },
        "external": False,
        "server": "db",
        **rules,
    }


async def test_an_agent_shows_its_mcp_tools_with_their_server_and_its_servers_status(
    make_mcp_client: ClientFactory,
) -> None:
    # Twice, one app after the other on the same module: its servers are connected at each
    # start and closed at each stop.
    for _ in range(2):
        async with make_mcp_client(with_executor=False) as client:
            listed = (await client.get("/agents")).json()
            response = await client.get("/agents/records")

        assert response.status_code == 200
        agent = response.json()
        assert listed["items"] == [agent]
        db, down = agent.pop("mcp_servers")
        assert agent["tools"] == [
            {
                "name": "today",
                "description": "Today's date.",
                "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
                "effect": "read",
                "needs_approval": "never",
                "external": False,
                "server": None,
            },
            db_tool(
                "lookup", "Look a key up.", {"key": "string"}, effect="read", needs_approval="never"
            ),
            db_tool(
                "put",
                "Store a value under a key (the same twice is no change).",
                {"key": "string", "value": "string"},
                effect="idempotent",
                needs_approval="never",
            ),
            db_tool(
                "delete_row",
                "Delete a row for good.",
                {"row": "integer"},
                effect="unsafe",
                needs_approval="always",
            ),
        ]
        assert db == {"name": "db", "transport": "stdio", "status": "available", "error": None}
        # Nothing listens on port 9: the reason is the refused connection, as httpx says it.
        assert down == {
            "name": "down",
            "transport": "http",
            "status": "unavailable",
            "error": "ConnectError: All connection attempts failed",
        }


async def test_a_run_calls_mcp_tools_and_a_destructive_one_waits_for_a_person(
    make_mcp_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", [call("lookup", {"key": "r7"}), call("delete_row", {"row": 7}), text("done")])
    async with make_mcp_client() as client:
        created = await client.post(
            "/runs", params={"wait": 10}, json={"agent": "records", "input": "drop row 7"}
        )
        run = created.json()
        assert run["status"] == "pending_approval", run["error"]
        [pending] = run["pending_approvals"]
        assert (pending["tool"], pending["arguments"], pending["kind"]) == (
            "delete_row",
            {"row": 7},
            "approval",
        )

        decided = await client.post(
            f"/runs/{run['id']}/approvals",
            params={"wait": 10},
            json={"decisions": [{"call_id": pending["call_id"], "approved": True}]},
        )

    finished = decided.json()
    assert finished["status"] == "completed"
    outputs = [m["content"] for m in finished["messages"] if m["role"] == "tool"]
    assert outputs == ["value of r7", "deleted row 7"]
