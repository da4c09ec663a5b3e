"""`/agents`, `/healthz` and `/readyz`."""

from __future__ import annotations

import pytest

from tests.api.conftest import Client, services_of

pytestmark = pytest.mark.anyio


async def test_agents_are_listed_with_tools_and_handoffs(client: Client) -> None:
    response = await client.get("/agents")

    assert response.status_code == 200
    page = response.json()
    assert page["next_cursor"] is None
    assert [agent["name"] for agent in page["items"]] == ["billing", "calc", "careful"]
    calc = page["items"][1]
    assert calc["description"] == "Arithmetic."
    assert calc["model"] == "m"  # the default model, as the agent names none
    assert calc["handoffs"] == ["billing"]
    assert calc["mcp_servers"] == []
    tools = {tool["name"]: tool for tool in calc["tools"]}
    assert set(tools) == {
        "add",
        "wait_for_release",
        "delete_record",
        "guarded_wait",
        "unstorable_text",
        "long_text",
        "take_photo",
        "transfer_to_billing",
    }
    assert tools["add"] == {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
        "effect": "read",
        "needs_approval": "never",
        "external": False,
        "server": None,
    }
    assert tools["delete_record"]["needs_approval"] == "always"
    assert tools["delete_record"]["effect"] == "unsafe"
    assert (tools["take_photo"]["external"], tools["take_photo"]["needs_approval"]) == (
        True,
        "always",
    )


async def test_agents_page_and_one_agent(client: Client) -> None:
    names: list[str] = []
    params: dict[str, str | int] = {"limit": 1}
    for _ in range(5):
        page = (await client.get("/agents", params=params)).json()
        names += [agent["name"] for agent in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]

    assert names == ["billing", "calc", "careful"]
    assert (await client.get("/agents/billing")).json()["name"] == "billing"
    missing = await client.get("/agents/nobody")
    assert missing.status_code == 404
    assert missing.json()["type"] == "/problems/not-found"


async def test_health_and_readiness(client: Client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_readiness_is_503_when_the_database_does_not_answer(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_answer() -> None:
        raise ConnectionRefusedError("database down")

    monkeypatch.setattr(services_of(client).db, "check_writable", no_answer)
    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get("/healthz")).status_code == 200


async def test_a_run_of_an_unknown_agent_names_the_known_ones(client: Client) -> None:
    response = await client.post("/runs", json={"agent": "nosuch", "input": "hi"})

    assert response.status_code == 422
    assert response.json()["detail"] == (
        "no agent is named 'nosuch' (known: billing, calc, careful)"
    )
