"""`/runs`: create (with wait), read, list, cancel, and their errors."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from app.api import pagination
from app.testing import FakeModel, call, text
from tests.api import agents as test_agents
from tests.api.conftest import Client, ClientFactory, requests_arrived, rested, services_of

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"


async def create(client: Client, body: dict[str, Any], **params: Any) -> dict[str, Any]:
    response = await client.post("/runs", json=body, params=params)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_create_with_wait_completes(client: Client, fake: FakeModel) -> None:
    fake.script("m", [call("add", {"a": 2, "b": 3}), text("5")])

    response = await client.post(
        "/runs",
        params={"wait": 10},
        json={"agent": "calc", "input": "2+3?", "context": {"u": 1}, "metadata": {"k": "v"}},
    )

    assert response.status_code == 201
    run = response.json()
    assert response.headers["location"] == f"/runs/{run['id']}"
    assert run["id"].startswith("run_")
    assert run["status"] == "completed"
    assert run["final_output"] == "5"
    assert run["agent"] == run["current_agent"] == "calc"
    assert run["metadata"] == {"k": "v"}
    assert run["input"] == [{"role": "user", "content": "2+3?"}]
    assert run["context"] == {"u": 1}
    assert run["config"]["max_turns"] == 30
    assert run["config"]["max_history_messages"] is None
    assert run["history"] is None  # no session
    assert [m["role"] for m in run["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert run["steps"][0]["tool_calls"][0] | {"call_id": None} == {
        "call_id": None,
        "name": "add",
        "arguments": {"a": 2, "b": 3},
        "output": "5",
        "status": "completed",
        "truncated": False,
    }
    assert run["usage"]["requests"] == 2
    assert run["error"] is None
    assert run["created_at"].endswith(("+00:00", "Z"))
    assert run["started_at"] is not None
    assert run["finished_at"] is not None
    assert (await client.get(f"/runs/{run['id']}")).json() == run


async def test_create_without_wait_is_queued(make_client: ClientFactory, fake: FakeModel) -> None:
    async with make_client(with_executor=False) as client:
        run = await create(client, {"agent": "calc", "input": [{"role": "user", "content": "hi"}]})

    assert run["status"] == "queued"
    assert run["messages"] == run["input"] == [{"role": "user", "content": "hi"}]
    assert run["context"] == {}
    assert run["steps"] == []
    assert run["started_at"] is None


async def test_wait_returns_when_the_time_passes(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    async with make_client(with_executor=False) as client:
        response = await client.post(
            "/runs", params={"wait": 0.3}, json={"agent": "calc", "input": "x"}
        )

    assert response.status_code == 201
    assert response.json()["status"] == "queued"


async def test_wait_returns_at_pending_approval(client: Client, fake: FakeModel) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r1"})])

    run = await create(client, {"agent": "calc", "input": "delete r1"}, wait=10)

    assert run["status"] == "pending_approval"
    assert run["pending_approvals"] == [
        {
            "call_id": run["steps"][0]["tool_calls"][0]["call_id"],
            "tool": "delete_record",
            "arguments": {"record_id": "r1"},
            "agent": "calc",
            "in_doubt": False,
            "kind": "approval",
            "reason": None,
        }
    ]
    assert run["steps"][0]["tool_calls"][0]["status"] == "pending"


@pytest.mark.parametrize(
    ("body", "params", "status", "loc"),
    [
        ({"agent": "nobody", "input": "x"}, {}, 422, ["body", "agent"]),
        ({"agent": "calc"}, {}, 422, ["body", "input"]),
        ({"agent": "calc", "input": ""}, {}, 422, ["body", "input"]),
        ({"agent": "calc", "input": []}, {}, 422, ["body", "input"]),
        ({"agent": "calc", "input": "x", "config": {"max_turns": 0}}, {}, 422, None),
        ({"agent": "calc", "input": "x", "config": {"tool_errors": "explode"}}, {}, 422, None),
        *(
            (
                {"agent": "calc", "input": "x", "config": {"max_history_messages": bad}},
                {},
                422,
                ["body", "config", "max_history_messages"],
            )
            for bad in (-1, "many", 2.5, [3])
        ),
        ({"agent": "calc", "input": "x", "surprise": 1}, {}, 422, ["body", "surprise"]),
        ({"agent": "calc", "input": "x", "if_busy": "shout"}, {}, 422, ["body", "if_busy"]),
        ({"agent": "calc", "input": "x", "session_id": "has space"}, {}, 422, None),
        ({"agent": "calc", "input": "x"}, {"wait": 61}, 422, ["query", "wait"]),
        ({"agent": "calc", "input": "x"}, {"wait": -1}, 422, ["query", "wait"]),
        ({"agent": "calc", "input": [{"role": "robot"}]}, {}, 422, None),
    ],
)
async def test_bad_requests_are_problems(
    client: Client,
    body: dict[str, Any],
    params: dict[str, Any],
    status: int,
    loc: list[str] | None,
) -> None:
    response = await client.post("/runs", json=body, params=params)

    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "/problems/validation-error"
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    if loc is not None:
        assert loc in [error["loc"] for error in problem["errors"]]
    assert (await client.get("/runs")).json()["items"] == []  # nothing was stored


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
async def test_non_finite_numbers_are_refused(client: Client, number: bytes) -> None:
    body = b'{"agent": "calc", "input": "x", "context": {"n": [1, ' + number + b"]}}"

    response = await client.post(
        "/runs", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert "NaN and Infinity" in response.json()["detail"]


async def test_json_nested_too_deep_is_refused(client: Client) -> None:
    deep: Any = "bottom"
    for _ in range(100):
        deep = {"d": deep}

    response = await client.post("/runs", json={"agent": "calc", "input": "x", "metadata": deep})

    assert response.status_code == 422
    assert "nested deeper" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/runs/%00"),
        ("POST", "/runs/run%00x/cancel"),
        ("GET", "/runs?agent=%00"),
        ("GET", "/runs?session_id=a%00b"),
        ("GET", "/sessions/%00"),
        ("DELETE", "/sessions/%00"),
    ],
)
async def test_nul_in_a_url_is_refused(client: Client, method: str, url: str) -> None:
    response = await client.request(method, url)

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"][0]["loc"] == ["path" if "?" not in url else "query"]


async def test_malformed_json_is_400(client: Client) -> None:
    response = await client.post(
        "/runs",
        content=b'{"agent": "calc", "input": ',
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "/problems/validation-error"


async def test_unknown_run_and_route_are_404(client: Client) -> None:
    for response in (
        await client.get("/runs/run_nope"),
        await client.post("/runs/run_nope/cancel"),
        await client.get("/nowhere"),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "/problems/not-found"


async def test_list_filters_and_pages_newest_first(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    async with make_client(with_executor=False) as client:
        created = [
            await create(client, {"agent": agent, "input": f"#{i}", "session_id": session})
            for i, (agent, session) in enumerate(
                [
                    ("calc", "s1"),
                    ("billing", None),
                    ("calc", None),
                    ("calc", "s1"),
                    ("billing", "s2"),
                ]
            )
        ]
        await client.post(f"/runs/{created[2]['id']}/cancel")
        ids = [run["id"] for run in created]

        async def listed(**params: Any) -> list[str]:
            response = await client.get("/runs", params=params)
            assert response.status_code == 200, response.text
            return [run["id"] for run in response.json()["items"]]

        assert await listed() == ids[::-1]
        assert await listed(agent="calc") == [ids[3], ids[2], ids[0]]
        assert await listed(session_id="s1") == [ids[3], ids[0]]
        assert await listed(status="cancelled") == [ids[2]]
        assert await listed(status=["cancelled", "queued"], agent="billing") == [ids[4], ids[1]]
        assert await listed(status="queued", agent="calc") == [ids[3], ids[0]]
        assert await listed(agent="calc", session_id="s1") == [ids[3], ids[0]]
        # One status, page by page: each page goes on below the last.
        pages: list[str] = []
        params: dict[str, Any] = {"status": "queued", "limit": 1}
        for _ in range(len(ids) + 1):  # bounded
            page = (await client.get("/runs", params=params)).json()
            pages += [run["id"] for run in page["items"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert pages == [ids[4], ids[3], ids[1], ids[0]]

        first = (await client.get("/runs", params={"limit": 2})).json()
        assert [r["id"] for r in first["items"]] == [ids[4], ids[3]]
        # Runs created meanwhile do not disturb the pages that follow.
        newer = await create(client, {"agent": "calc", "input": "newer"})
        second = (
            await client.get("/runs", params={"limit": 2, "cursor": first["next_cursor"]})
        ).json()
        assert [r["id"] for r in second["items"]] == [ids[2], ids[1]]
        third = (
            await client.get("/runs", params={"limit": 2, "cursor": second["next_cursor"]})
        ).json()
        assert [r["id"] for r in third["items"]] == [ids[0]]
        assert third["next_cursor"] is None
        assert (await listed())[0] == newer["id"]


def cursor_of(position: Any) -> str:
    return pagination.encode({"seq": position})


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"cursor": "garbage"},
        {"cursor": cursor_of(10**30)},
        {"cursor": cursor_of(-1)},
        {"cursor": cursor_of("7")},
        {"status": "sleeping"},
    ],
)
async def test_bad_list_parameters_are_422(client: Client, params: dict[str, Any]) -> None:
    response = await client.get("/runs", params=params)

    assert response.status_code == 422
    assert response.json()["type"] == "/problems/validation-error"


async def test_pagination_under_concurrent_inserts(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    async with make_client(with_executor=False) as client:
        before = [
            (await create(client, {"agent": "calc", "input": str(i)}))["id"] for i in range(25)
        ]
        seen: list[str] = []

        async def insert_more() -> None:
            for i in range(15):
                await create(client, {"agent": "calc", "input": f"more {i}"})

        async def page_through() -> None:
            cursor = None
            for _ in range(50):
                params: dict[str, Any] = {"limit": 3}
                if cursor:
                    params["cursor"] = cursor
                page = (await client.get("/runs", params=params)).json()
                seen.extend(run["id"] for run in page["items"])
                cursor = page["next_cursor"]
                if cursor is None:
                    return
                await anyio.lowlevel.checkpoint()  # let the inserts interleave

        async with anyio.create_task_group() as group:
            group.start_soon(insert_more)
            group.start_soon(page_through)

    assert len(seen) == len(set(seen))  # no run twice
    assert [run_id for run_id in seen if run_id in before] == before[::-1]  # none skipped


async def test_cancel_a_queued_run(make_client: ClientFactory) -> None:
    async with make_client(with_executor=False) as client:
        run = await create(client, {"agent": "calc", "input": "x"})

        response = await client.post(f"/runs/{run['id']}/cancel")

        assert response.status_code == 202
        assert response.json()["status"] == "cancelled"
        assert response.json()["finished_at"] is not None
        again = await client.post(f"/runs/{run['id']}/cancel")
        assert again.status_code == 409
        assert again.json()["type"] == "/problems/run-ended"


async def test_cancel_a_running_run_during_a_slow_tool(client: Client, fake: FakeModel) -> None:
    fake.script("m", [call("wait_for_release"), text("never")])
    run = await create(client, {"agent": "calc", "input": "go"})
    with anyio.fail_after(10):
        await test_agents.slow_started.wait()

    response = await client.post(f"/runs/{run['id']}/cancel")

    assert response.status_code == 202
    assert response.json()["status"] == "running"  # it stops at its next await
    cancelled = await rested(client, run["id"])
    assert cancelled["status"] == "cancelled"
    [step] = cancelled["steps"]
    assert step["tool_calls"][0]["status"] == "cancelled"
    assert cancelled["messages"][-1]["role"] == "tool"  # the conversation stays valid
    assert cancelled["finished_at"] is not None
    assert len(fake.requests_for("m")) == 1


async def test_cancel_a_run_during_a_slow_model_call(client: Client, fake: FakeModel) -> None:
    fake.script("m", [text("late", delay=30)])
    run = await create(client, {"agent": "calc", "input": "go"})
    await requests_arrived(fake, 1, "m")

    await client.post(f"/runs/{run['id']}/cancel")

    cancelled = await rested(client, run["id"])
    assert cancelled["status"] == "cancelled"
    assert cancelled["final_output"] is None
    assert cancelled["messages"] == [{"role": "user", "content": "go"}]


async def test_an_unexpected_failure_is_a_500_problem_with_an_id(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(run_id: str) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(services_of(client).runs, "get", broken)
    with capture_logs() as logs:
        response = await client.get("/runs/run_x")

    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "/problems/internal-error"
    assert "database on fire" not in problem["detail"]
    [failed] = [entry for entry in logs if entry["event"] == "request.failed"]
    assert failed["error_id"] == problem["error_id"]
    assert failed["exc_info"] is not None
