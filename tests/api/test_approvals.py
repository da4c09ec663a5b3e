"""Human approvals over HTTP: park, list, decide (in parts), resume anywhere, and audit."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from app.testing import FakeModel, Reply, Rule, Script, call, calls, text
from tests.api import agents as test_agents
from tests.api.conftest import Client, ClientFactory, rested
from tests.conftest import is_postgres

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"


async def park(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/runs", params={"wait": 10}, json={"agent": "calc", **body})
    run: dict[str, Any] = response.json()
    assert run["status"] == "pending_approval", run["error"]
    return run


async def decide(client: Client, run_id: str, *decisions: dict[str, Any], **headers: str) -> Any:
    return await client.post(
        f"/runs/{run_id}/approvals", json={"decisions": list(decisions)}, headers=headers
    )


def tool_outputs(run: dict[str, Any]) -> list[str]:
    return [m["content"] for m in run["messages"] if m["role"] == "tool"]


MIXED_TURN = calls(
    ("delete_record", {"record_id": "r1"}),
    ("delete_record", {"record_id": "r2"}),
    ("add", {"a": 1, "b": 2}),
)


async def test_a_mixed_turn_parks_is_listed_and_resumes_after_partial_decisions(
    client: Client, fake: FakeModel
) -> None:
    fake.script("m", [MIXED_TURN, text("done")])
    run = await park(client, {"input": "clean up"})
    first, second = (p["call_id"] for p in run["pending_approvals"])
    assert test_agents.calls_seen == [("add", None)]  # ran at once; the deletes wait
    assert [c["status"] for c in run["steps"][0]["tool_calls"]] == [
        "pending",
        "pending",
        "completed",
    ]

    listed = (await client.get("/approvals")).json()
    assert [(a["call_id"], a["status"]) for a in listed["items"]] == [
        (second, "pending"),
        (first, "pending"),
    ]
    card = listed["items"][1]
    assert card["run_id"] == run["id"]
    assert (card["tool"], card["agent"], card["arguments"]) == (
        "delete_record",
        "calc",
        {"record_id": "r1"},
    )
    assert card["in_doubt"] is False
    assert card["decision"] is None
    assert card["last_messages"][0] == {"role": "user", "content": "clean up"}
    assert card["requested_at"] is not None

    partial = await decide(client, run["id"], {"call_id": first, "approved": True})
    assert partial.status_code == 200
    assert partial.json()["status"] == "pending_approval"
    assert [p["call_id"] for p in partial.json()["pending_approvals"]] == [second]

    rest = await decide(
        client, run["id"], {"call_id": second, "approved": False, "reason": "keep it"}
    )
    assert rest.json()["status"] in ("queued", "running", "completed")
    finished = await rested(client, run["id"])

    assert finished["status"] == "completed"
    assert test_agents.calls_seen == [("add", None), ("delete_record", "r1")]
    assert tool_outputs(finished) == [
        "deleted r1",
        "The tool call was rejected and not run. Reason: keep it",
        "3",
    ]
    assert [
        (d["call_id"], d["approved"], d["source"], d["reason"]) for d in finished["decisions"]
    ] == [
        (first, True, "human", None),
        (second, False, "human", "keep it"),
    ]
    assert all(d["decided_at"] for d in finished["decisions"])
    assert (await client.get("/approvals")).json()["items"] == []
    decided = (await client.get("/approvals", params={"status": "decided"})).json()["items"]
    assert {(a["call_id"], a["decision"]["approved"]) for a in decided} == {
        (first, True),
        (second, False),
    }
    assert len((await client.get("/approvals", params={"status": "all"})).json()["items"]) == 2


async def test_edited_arguments_reach_the_tool(client: Client, fake: FakeModel) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("done")])
    run = await park(client, {"input": "delete"})
    [pending] = run["pending_approvals"]

    bad = await decide(
        client, run["id"], {"call_id": pending["call_id"], "approved": True, "arguments": {"id": 1}}
    )
    assert bad.status_code == 422
    assert bad.json()["type"] == "/problems/validation-error"
    assert {tuple(e["loc"]) for e in bad.json()["errors"]} == {("record_id",), ("id",)}
    assert (await client.get(f"/runs/{run['id']}")).json()["status"] == "pending_approval"

    edited = {"call_id": pending["call_id"], "approved": True, "arguments": {"record_id": "r9"}}
    assert (await decide(client, run["id"], edited)).status_code == 200
    finished = await rested(client, run["id"])

    assert test_agents.calls_seen == [("delete_record", "r9")]
    assert finished["decisions"][0]["arguments"] == {"record_id": "r9"}
    assert tool_outputs(finished) == ["deleted r9"]


async def test_decision_errors(client: Client, fake: FakeModel) -> None:
    fake.script(
        "m", [calls(("delete_record", {"record_id": "a"}), ("delete_record", {"record_id": "b"}))]
    )
    run = await park(client, {"input": "delete"})
    first = run["pending_approvals"][0]["call_id"]

    unknown = await decide(client, run["id"], {"call_id": "call_nope", "approved": True})
    assert (unknown.status_code, unknown.json()["type"]) == (422, "/problems/validation-error")
    assert (
        await decide(client, run["id"], {"call_id": first, "approved": True})
    ).status_code == 200
    twice = await decide(client, run["id"], {"call_id": first, "approved": False})
    assert (twice.status_code, twice.json()["type"]) == (409, "/problems/call-already-decided")
    empty = await client.post(f"/runs/{run['id']}/approvals", json={"decisions": []})
    assert empty.status_code == 422
    missing = await decide(client, "run_nope", {"call_id": first, "approved": True})
    assert (missing.status_code, missing.json()["type"]) == (404, "/problems/not-found")

    await client.post(f"/runs/{run['id']}/cancel")
    ended = await decide(client, run["id"], {"call_id": first, "approved": True})
    assert (ended.status_code, ended.json()["type"]) == (409, "/problems/run-ended")
    assert (await client.get("/approvals")).json()["items"] == []  # cancelled calls leave


async def test_deciding_a_run_that_is_not_parked_is_409(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    async with make_client(with_executor=False) as client:
        run = (await client.post("/runs", json={"agent": "calc", "input": "x"})).json()

        response = await decide(client, run["id"], {"call_id": "c", "approved": True})

    assert (response.status_code, response.json()["type"]) == (409, "/problems/run-not-pending")


async def test_remember_approves_later_calls_of_the_tool(client: Client, fake: FakeModel) -> None:
    fake.script(
        "m",
        [
            calls(("delete_record", {"record_id": "a"}), ("delete_record", {"record_id": "b"})),
            call("delete_record", {"record_id": "c"}),
            text("done"),
        ],
    )
    run = await park(client, {"input": "delete all"})
    first, second = (p["call_id"] for p in run["pending_approvals"])

    await decide(client, run["id"], {"call_id": first, "approved": True, "remember": True})
    again = await decide(client, run["id"], {"call_id": second, "approved": False})
    finished = await rested(client, run["id"])

    assert again.status_code == 409
    assert finished["status"] == "completed"
    assert [name for name, _ in test_agents.calls_seen].count("delete_record") == 3
    assert [d["source"] for d in finished["decisions"]] == ["human", "remember", "remember"]


async def test_a_retried_decision_gets_the_first_answer(client: Client, fake: FakeModel) -> None:
    fake.script("m", [call("delete_record", {"record_id": "a"}), text("done")])
    run = await park(client, {"input": "delete"})
    decision = {"call_id": run["pending_approvals"][0]["call_id"], "approved": True}

    first = await decide(client, run["id"], decision, **{"Idempotency-Key": "d1"})
    await rested(client, run["id"])
    retry = await decide(client, run["id"], decision, **{"Idempotency-Key": "d1"})
    other = await decide(
        client, run["id"], {**decision, "approved": False}, **{"Idempotency-Key": "d1"}
    )

    assert first.status_code == retry.status_code == 200
    assert retry.json()["status"] == "completed"
    assert len(retry.json()["decisions"]) == 1
    assert (other.status_code, other.json()["type"]) == (422, "/problems/idempotency-key-reused")
    assert test_agents.calls_seen == [("delete_record", "a")]


async def test_a_restart_between_parking_and_deciding(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "a"}), text("done")])
    async with make_client() as client:
        run = await park(client, {"input": "delete"})
    async with make_client() as client:
        call_id = run["pending_approvals"][0]["call_id"]
        await decide(client, run["id"], {"call_id": call_id, "approved": True})
        finished = await rested(client, run["id"])

    assert finished["status"] == "completed"
    assert tool_outputs(finished) == ["deleted a"]


async def warmed_up(client: Client, fake: FakeModel, *replies: Reply) -> None:
    """Script `replies`, after one run that opens the model connection, so the short timeouts
    below measure turns, not a first connection on a loaded machine."""
    fake.script(
        "m",
        Script(rules=[Rule(match="warm up", replies=[text("warm")]), Rule(replies=list(replies))]),
    )
    warm = await client.post(
        "/runs", params={"wait": 10}, json={"agent": "calc", "input": "warm up"}
    )
    assert warm.json()["status"] == "completed"


async def test_time_parked_is_not_execution_time(client: Client, fake: FakeModel) -> None:
    await warmed_up(client, fake, call("delete_record", {"record_id": "a"}), text("done"))
    run = await park(client, {"input": "delete", "config": {"timeout_seconds": 0.5}})
    await anyio.sleep(0.7)  # parked longer than the whole timeout; no event to wait for

    await decide(
        client, run["id"], {"call_id": run["pending_approvals"][0]["call_id"], "approved": True}
    )
    finished = await rested(client, run["id"])

    assert finished["status"] == "completed"


async def test_execution_past_the_timeout_fails_after_an_approval(
    client: Client, fake: FakeModel
) -> None:
    await warmed_up(client, fake, call("guarded_wait"), text("never"))
    run = await park(client, {"input": "wait", "config": {"timeout_seconds": 0.5}})
    call_id = run["pending_approvals"][0]["call_id"]

    await decide(client, run["id"], {"call_id": call_id, "approved": True})
    finished = await rested(client, run["id"])

    assert finished["status"] == "failed"
    assert finished["error"]["code"] == "timeout"
    assert finished["steps"][0]["tool_calls"][0]["status"] == "cancelled"


async def test_an_approval_handler_decides_before_a_human(client: Client, fake: FakeModel) -> None:
    fake.script(
        "m",
        [
            calls(
                ("delete_record", {"record_id": "friday"}),
                ("delete_record", {"record_id": "monday"}),
            )
        ],
    )
    response = await client.post(
        "/runs", params={"wait": 10}, json={"agent": "careful", "input": "delete"}
    )
    run = response.json()

    assert run["status"] == "pending_approval"
    assert [p["arguments"] for p in run["pending_approvals"]] == [{"record_id": "monday"}]
    [handled] = run["decisions"]
    assert (handled["source"], handled["approved"], handled["reason"]) == (
        "handler",
        False,
        "not on fridays",
    )
    assert [a["arguments"] for a in (await client.get("/approvals")).json()["items"]] == [
        {"record_id": "monday"}
    ]


async def test_concurrent_decisions_on_one_call_execute_it_once(
    client: Client, fake: FakeModel, db_url: str
) -> None:
    if not is_postgres(db_url):
        pytest.skip("concurrent requests race for real only on PostgreSQL")
    fake.script("m", [call("delete_record", {"record_id": "once"}), text("done")])
    run = await park(client, {"input": "delete"})
    decision = {"call_id": run["pending_approvals"][0]["call_id"], "approved": True}
    statuses: list[int] = []

    async def send() -> None:
        statuses.append((await decide(client, run["id"], decision)).status_code)

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(send)
    finished = await rested(client, run["id"])

    assert sorted(statuses) == [200] + [409] * 7
    assert finished["status"] == "completed"
    assert test_agents.calls_seen == [("delete_record", "once")]


async def test_approvals_are_filtered_and_paged(client: Client, fake: FakeModel) -> None:
    fake.script("m", [Reply(tool_calls=MIXED_TURN.tool_calls)])
    runs = [await park(client, {"input": f"clean {i}"}) for i in range(3)]

    by_tool = (await client.get("/approvals", params={"tool": "delete_record"})).json()["items"]
    assert len(by_tool) == 6
    assert (await client.get("/approvals", params={"tool": "add"})).json()["items"] == []
    assert (await client.get("/approvals", params={"agent": "billing"})).json()["items"] == []
    one_run = await client.get("/approvals", params={"run_id": runs[1]["id"]})
    assert [item["run_id"] for item in one_run.json()["items"]] == [runs[1]["id"]] * 2
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 4}
    for _ in range(5):
        page = (await client.get("/approvals", params=params)).json()
        seen += [item["run_id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [run["id"] for run in reversed(runs) for _ in range(2)]
    bad = await client.get("/approvals", params={"status": "maybe"})
    assert bad.status_code == 422


async def test_a_decision_with_wait_answers_once_the_run_rests_again(
    client: Client, fake: FakeModel
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("deleted")])
    run = await park(client, {"input": "delete r1"})
    call_id = run["pending_approvals"][0]["call_id"]

    response = await client.post(
        f"/runs/{run['id']}/approvals",
        params={"wait": 10},
        json={"decisions": [{"call_id": call_id, "approved": True}]},
    )

    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    assert response.json()["final_output"] == "deleted"


@pytest.mark.parametrize("wait", ["-1", "61", "soon"])
async def test_a_decision_wait_outside_0_to_60_is_422(
    client: Client, fake: FakeModel, wait: str
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("deleted")])
    run = await park(client, {"input": "delete r1"})
    call_id = run["pending_approvals"][0]["call_id"]

    response = await client.post(
        f"/runs/{run['id']}/approvals",
        params={"wait": wait},
        json={"decisions": [{"call_id": call_id, "approved": True}]},
    )

    assert response.status_code == 422
    assert response.json()["type"] == "/problems/validation-error"
    assert (await client.get(f"/runs/{run['id']}")).json()["status"] == "pending_approval"
