"""Tools the client runs, and outputs a person supplies, over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from app.testing import FakeModel, call, calls, text
from tests.api import agents as test_agents
from tests.api.conftest import Client, ClientFactory, rested
from tests.api.test_durability import stored_events

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


async def park(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/runs", params={"wait": 10}, json={"agent": "calc", **body})
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    assert run["status"] == "pending_approval", run["error"]
    return run


async def decide(client: Client, run_id: str, *decisions: dict[str, Any]) -> Any:
    return await client.post(f"/runs/{run_id}/approvals", json={"decisions": list(decisions)})


def tool_outputs(run: dict[str, Any]) -> list[str]:
    return [m["content"] for m in run["messages"] if m["role"] == "tool"]


async def test_a_person_supplies_the_output_of_an_approval_call(
    client: Client, fake: FakeModel
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("done")])
    run = await park(client, {"input": "delete r1"})
    [pending] = run["pending_approvals"]
    assert pending["kind"] == "approval"

    decided = await decide(
        client,
        run["id"],
        {"call_id": pending["call_id"], "approved": True, "output": "deleted r1 by hand"},
    )
    assert decided.status_code == 200, decided.text
    finished = await rested(client, run["id"])

    assert finished["status"] == "completed"
    assert test_agents.calls_seen == []  # the tool was not run
    assert tool_outputs(finished) == ["deleted r1 by hand"]
    [decision] = finished["decisions"]
    assert (decision["approved"], decision["output"]) == (True, "deleted r1 by hand")
    [tool_call] = finished["steps"][0]["tool_calls"]
    assert (tool_call["status"], tool_call["output"]) == ("completed", "deleted r1 by hand")
    completed = [
        e.data for e in await stored_events(client, run["id"]) if e.name == "tool_call.completed"
    ]
    assert [(e["output"], e["status"]) for e in completed] == [("deleted r1 by hand", "completed")]
    listed = (await client.get("/approvals", params={"status": "decided"})).json()["items"]
    assert listed[0]["decision"]["output"] == "deleted r1 by hand"


async def test_a_decorated_external_tool_waits_for_the_client(
    client: Client, fake: FakeModel
) -> None:
    fake.script("m", [call("take_photo", {"subject": "cat"}), text("what a cat")])
    run = await park(client, {"input": "photo of my cat"})
    [pending] = run["pending_approvals"]
    assert (pending["kind"], pending["tool"], pending["arguments"]) == (
        "external",
        "take_photo",
        {"subject": "cat"},
    )
    requested = [
        e.data for e in await stored_events(client, run["id"]) if e.name == "approval.requested"
    ]
    assert requested == [pending]

    await decide(
        client, run["id"], {"call_id": pending["call_id"], "approved": True, "output": "cat.jpg"}
    )
    finished = await rested(client, run["id"])

    assert finished["status"] == "completed"
    assert tool_outputs(finished) == ["cat.jpg"]
    assert test_agents.calls_seen == []


async def test_run_tools_are_offered_and_answered_in_two_requests(
    client: Client, fake: FakeModel
) -> None:
    fake.script(
        "m",
        [
            calls(("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Rome"})),
            text("cold and warm"),
        ],
    )
    run = await park(client, {"input": "weather?", "tools": [WEATHER]})
    assert run["tools"] == [WEATHER]
    offered = fake.requests_for("m")[0]["tools"]
    [weather] = [t["function"] for t in offered if t["function"]["name"] == "get_weather"]
    assert weather == WEATHER
    oslo, rome = run["pending_approvals"]
    assert {oslo["kind"], rome["kind"]} == {"external"}

    first = await decide(
        client, run["id"], {"call_id": oslo["call_id"], "approved": True, "output": "-3 C"}
    )
    assert first.json()["status"] == "pending_approval"
    assert [p["call_id"] for p in first.json()["pending_approvals"]] == [rome["call_id"]]
    await decide(
        client, run["id"], {"call_id": rome["call_id"], "approved": True, "output": "24 C"}
    )
    finished = await rested(client, run["id"])

    assert finished["status"] == "completed"
    assert tool_outputs(finished) == ["-3 C", "24 C"]
    assert finished["final_output"] == "cold and warm"


async def test_a_parked_external_call_is_answered_in_another_process(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", [call("get_weather", {"city": "Oslo"}), text("cold")])
    async with make_client() as client:
        run = await park(client, {"input": "weather?", "tools": [WEATHER]})
    async with make_client() as client:
        call_id = run["pending_approvals"][0]["call_id"]
        await decide(client, run["id"], {"call_id": call_id, "approved": True, "output": "-3 C"})
        finished = await rested(client, run["id"])

    assert finished["status"] == "completed"
    assert tool_outputs(finished) == ["-3 C"]
    # The run's tools came from its stored request: the resumed turn offered them again.
    last = fake.requests_for("m")[-1]["tools"]
    assert "get_weather" in [t["function"]["name"] for t in last]


async def test_decisions_that_do_not_fit_an_external_call(client: Client, fake: FakeModel) -> None:
    fake.script("m", [call("get_weather", {"city": "Oslo"}), text("no weather then")])
    run = await park(client, {"input": "weather?", "tools": [WEATHER]})
    call_id = run["pending_approvals"][0]["call_id"]

    for wrong in (
        {"approved": True},
        {"approved": True, "output": "1 C", "arguments": {"city": "Rome"}},
        {"approved": True, "output": "1 C", "remember": True},
        {"approved": False, "output": "1 C"},
    ):
        refused = await decide(client, run["id"], {"call_id": call_id, **wrong})
        assert refused.status_code == 422, wrong
        assert refused.headers["content-type"] == PROBLEM
    unstorable = await decide(
        client, run["id"], {"call_id": call_id, "approved": True, "output": "a\x00b"}
    )
    assert unstorable.status_code == 422

    rejected = await decide(
        client, run["id"], {"call_id": call_id, "approved": False, "reason": "no location"}
    )
    assert rejected.status_code == 200
    finished = await rested(client, run["id"])
    assert finished["status"] == "completed"
    assert finished["steps"][0]["tool_calls"][0]["status"] == "rejected"
    assert "no location" in tool_outputs(finished)[0]


@pytest.mark.parametrize(
    ("tools", "where"),
    [
        ([{**WEATHER, "name": "add"}], "add"),
        ([{**WEATHER, "name": "transfer_to_billing"}], "transfer_to_billing"),
        ([{**WEATHER, "name": "final_output"}], "final_output"),
        ([WEATHER, WEATHER], "get_weather"),
        ([{**WEATHER, "name": "bad name"}], "name"),
        ([{**WEATHER, "parameters": {"type": "string"}}], "object"),
        ([{**WEATHER, "parameters": {"type": "object", "required": "city"}}], "required"),
        ([{**WEATHER, "parameters": {"type": "object", "properties": {"c": {"type": "x"}}}}], "x"),
    ],
)
async def test_run_tools_that_cannot_be_offered_are_refused(
    client: Client, tools: list[dict[str, Any]], where: str
) -> None:
    response = await client.post("/runs", json={"agent": "calc", "input": "hi", "tools": tools})

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert where in response.text
    assert (await client.get("/runs")).json()["items"] == []


async def test_approvals_are_filtered_by_kind(client: Client, fake: FakeModel) -> None:
    fake.script(
        "m",
        [calls(("delete_record", {"record_id": "r1"}), ("take_photo", {"subject": "dog"}))],
    )
    run = await park(client, {"input": "both"})
    delete, photo = run["pending_approvals"]

    def listed(page: dict[str, Any]) -> list[tuple[str, str]]:
        return [(item["call_id"], item["kind"]) for item in page["items"]]

    everything = (await client.get("/approvals")).json()
    assert listed(everything) == [(photo["call_id"], "external"), (delete["call_id"], "approval")]
    external = (await client.get("/approvals", params={"kind": "external"})).json()
    assert listed(external) == [(photo["call_id"], "external")]
    approval = (await client.get("/approvals", params={"kind": "approval"})).json()
    assert listed(approval) == [(delete["call_id"], "approval")]
    assert (await client.get("/approvals", params={"kind": "guardrail"})).json()["items"] == []
    assert (await client.get("/approvals", params={"kind": "other"})).status_code == 422
