"""Sessions: history across runs, one run at a time in creation order, if_busy, get and delete."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from app.testing import FakeModel, Reply, Rule, Script, call, text
from tests.api import agents as test_agents
from tests.api.conftest import Client, ClientFactory, rested

pytestmark = pytest.mark.anyio


async def create(client: Client, **body: Any) -> dict[str, Any]:
    response = await client.post("/runs", json={"agent": "calc", **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_history_is_loaded_before_a_run_and_saved_after(
    client: Client, fake: FakeModel
) -> None:
    fake.script("m", [text("first answer")])
    first = await create(client, input="first question", session_id="s1")
    await rested(client, first["id"])

    second = await create(client, input="second question", session_id="s1")
    second = await rested(client, second["id"])

    sent = [m["content"] for m in fake.requests_for("m")[-1]["messages"][1:]]
    assert sent == ["first question", "first answer", "second question"]
    assert [m["content"] for m in second["messages"]] == [*sent, "first answer"]
    session = (await client.get("/sessions/s1")).json()
    assert session["id"] == "s1"
    assert [m["content"] for m in session["messages"]] == [*sent, "first answer"]
    assert session["created_at"] <= session["updated_at"]


async def test_runs_of_a_session_run_one_at_a_time_in_creation_order(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", [text("ok", delay=0.05)])
    async with make_client(with_executor=False) as client:
        queued = [await create(client, input=f"message {i}", session_id="s1") for i in range(4)]
        other = await create(client, input="unrelated")
    async with make_client(concurrency=8) as client:
        finished = [await rested(client, run["id"]) for run in [*queued, other]]

    assert all(run["status"] == "completed" for run in finished)
    session_requests = [r for r in fake.requests_for("m") if "message" in str(r["messages"][-1])]
    # Each run saw every earlier run's messages: they ran one after another, in order.
    last_inputs = [r["messages"][-1]["content"] for r in session_requests]
    assert last_inputs == [f"message {i}" for i in range(4)]
    assert [len(r["messages"]) for r in session_requests] == [2, 4, 6, 8]
    starts = [run["started_at"] for run in finished[:4]]
    ends = [run["finished_at"] for run in finished[:4]]
    assert all(ends[i] <= starts[i + 1] for i in range(3))


async def test_if_busy_reject_refuses_while_a_run_is_unfinished(
    make_client: ClientFactory,
) -> None:
    async with make_client(with_executor=False) as client:
        await create(client, input="one", session_id="s1")

        response = await client.post(
            "/runs", json={"agent": "calc", "input": "two", "session_id": "s1", "if_busy": "reject"}
        )

        assert response.status_code == 409
        assert response.json()["type"] == "/problems/session-busy"
        assert len((await client.get("/runs")).json()["items"]) == 1


async def test_if_busy_interrupt_cancels_the_unfinished_runs(
    client: Client, fake: FakeModel
) -> None:
    fake.script(
        "m",
        Script(
            rules=[
                Rule(match="slow", replies=[call("wait_for_release")]),
                Rule(replies=[text("fresh answer")]),
            ]
        ),
    )
    running = await create(client, input="slow one", session_id="s1")
    with anyio.fail_after(10):
        await test_agents.slow_started.wait()

    fresh = await create(client, input="quick one", session_id="s1", if_busy="interrupt")
    fresh = await rested(client, fresh["id"])

    assert (await client.get(f"/runs/{running['id']}")).json()["status"] == "cancelled"
    assert fresh["status"] == "completed"
    # The interrupted run's messages stay valid history: its call got a result.
    roles = [m["role"] for m in fresh["messages"]]
    assert roles == ["user", "assistant", "tool", "user", "assistant"]


async def test_a_parked_run_holds_its_session(client: Client, fake: FakeModel) -> None:
    fake.script(
        "m",
        Script(
            rules=[
                Rule(match="delete", replies=[call("delete_record", {"record_id": "r"})]),
                Rule(replies=[Reply(content="after")]),
            ]
        ),
    )
    parked = await client.post(
        "/runs", params={"wait": 10}, json={"agent": "calc", "input": "delete", "session_id": "s1"}
    )
    assert parked.json()["status"] == "pending_approval"
    later = await create(client, input="later", session_id="s1")

    waited = await client.post(
        "/runs", params={"wait": 0.5}, json={"agent": "calc", "input": "x", "session_id": "s2"}
    )
    assert waited.json()["status"] == "completed"  # other sessions are not held up
    assert (await client.get(f"/runs/{later['id']}")).json()["status"] == "queued"

    await client.post(f"/runs/{parked.json()['id']}/cancel")
    assert (await rested(client, later["id"]))["status"] == "completed"


async def test_get_and_delete_sessions(make_client: ClientFactory, fake: FakeModel) -> None:
    async with make_client(with_executor=False) as client:
        assert (await client.get("/sessions/nope")).status_code == 404
        assert (await client.delete("/sessions/nope")).status_code == 404
        run = await create(client, input="hi", session_id="s1")

        busy = await client.delete("/sessions/s1")
        assert busy.status_code == 409
        assert busy.json()["type"] == "/problems/session-busy"

        await client.post(f"/runs/{run['id']}/cancel")
        assert (await client.delete("/sessions/s1")).status_code == 204
        assert (await client.get("/sessions/s1")).status_code == 404
        # The run keeps its label; a new run of the id starts a new conversation.
        assert (await client.get(f"/runs/{run['id']}")).json()["session_id"] == "s1"
