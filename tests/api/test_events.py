"""`GET /runs/{id}/events` over real HTTP: order, live deltas, resuming, cancel, gone clients."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from app.testing import FakeModel, Reply, call, calls, text
from tests.api.conftest import Live, LiveFactory, WorkerFactory

pytestmark = pytest.mark.anyio


async def stream(
    live: Live, run_id: str, *, after: int | None = None, use_query: bool = False
) -> list[ServerSentEvent]:
    """Every event until the service closes the stream (bounded: 30 s)."""
    headers = {"Last-Event-ID": str(after)} if after is not None and not use_query else {}
    params = {"last_event_id": after} if after is not None and use_query else {}
    received: list[ServerSentEvent] = []
    with anyio.fail_after(30):
        async with (
            httpx.AsyncClient(base_url=live.url, timeout=30) as client,
            aconnect_sse(
                client, "GET", f"/runs/{run_id}/events", headers=headers, params=params
            ) as source,
        ):
            async for event in source.aiter_sse():
                received.append(event)
    return received


def stored(events: list[ServerSentEvent]) -> list[ServerSentEvent]:
    return [event for event in events if event.event != "message.delta"]


async def post(live: Live, path: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        response = await client.post(path, json=body, params=params)
    assert response.status_code < 300, response.text
    data: dict[str, Any] = response.json()
    return data


async def get(live: Live, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        return await client.get(path)


async def test_the_events_of_a_run_with_tools_a_handoff_and_an_approval(
    serve_live: LiveFactory, fake: FakeModel
) -> None:
    fake.script(
        "m",
        [
            calls(("add", {"a": 1, "b": 2}), ("delete_record", {"record_id": "r1"})),
            call("transfer_to_billing"),
            text("All done now."),
        ],
    )
    with serve_live() as live:
        run = await post(live, "/runs", {"agent": "calc", "input": "go"}, wait=10)
        assert run["status"] == "pending_approval"
        call_id = run["pending_approvals"][0]["call_id"]
        decision = {"decisions": [{"call_id": call_id, "approved": True}]}
        await post(live, f"/runs/{run['id']}/approvals", decision)
        events = await stream(live, run["id"])

    names = [event.event for event in stored(events)]
    assert names == [
        "run.queued",
        "run.started",
        "message",  # the user's input
        "message",  # the assistant asks for add and delete_record
        "approval.requested",
        "tool_call.started",
        "tool_call.completed",
        "run.pending_approval",
        "approval.decided",
        "run.queued",
        "run.resumed",
        "tool_call.started",
        "tool_call.completed",
        "message",  # add's result
        "message",  # delete_record's result
        "message",  # the assistant hands off
        "tool_call.started",
        "tool_call.completed",
        "message",
        "agent.changed",
        "message",  # billing's answer
        "run.completed",
    ]
    ids = [int(event.id) for event in stored(events)]
    assert ids == list(range(1, len(ids) + 1))
    data = [json.loads(event.data) for event in stored(events)]
    # Each stored event says when it happened, in order.
    times = [datetime.fromisoformat(item.pop("stored_at")) for item in data]
    assert times == sorted(times)
    assert all(moment.tzinfo is not None for moment in times)
    assert "stored_at" not in run["pending_approvals"][0]
    assert data[-1] | {"usage": None} == {
        "run_id": run["id"],
        "status": "completed",
        "current_agent": "billing",
        "error": None,
        "usage": None,
        "final_output": "All done now.",
    }
    assert data[19] == {"from": "calc", "to": "billing"}
    assert data[5] == {
        "call_id": data[5]["call_id"],
        "name": "add",
        "arguments": {"a": 1, "b": 2},
        "agent": "calc",
    }
    assert data[6]["output"] == "3"
    assert data[-2]["message"] == {"role": "assistant", "content": "All done now."}


async def test_deltas_arrive_before_the_turn_ends(serve_live: LiveFactory, fake: FakeModel) -> None:
    # The model holds before its first words (until the watcher is there), then after them.
    fake.script("m", [Reply(content="The first words and then the rest", hold_after=[0, 1])])
    with serve_live() as live:
        run = await post(live, "/runs", {"agent": "calc", "input": "talk"})
        received: list[ServerSentEvent] = []
        with anyio.fail_after(30):
            async with (
                httpx.AsyncClient(base_url=live.url, timeout=30) as client,
                aconnect_sse(client, "GET", f"/runs/{run['id']}/events") as source,
            ):
                async for event in source.aiter_sse():
                    received.append(event)
                    if event.event == "message":  # the input: the watcher is live
                        fake.release()
                    elif event.event == "message.delta" and len(received) == 4:
                        # The first words are here and the model holds the rest.
                        status = (await client.get(f"/runs/{run['id']}")).json()["status"]
                        assert status == "running"
                        fake.release()

    deltas = [json.loads(e.data) for e in received if e.event == "message.delta"]
    assert deltas[0] == {"turn": 1, "attempt": 1, "text": "The"}
    assert "".join(delta["text"] for delta in deltas) == "The first words and then the rest"
    names = [event.event for event in received]
    assert names.index("message.delta") < max(i for i, n in enumerate(names) if n == "message")
    assert names[-1] == "run.completed"


@pytest.mark.parametrize("use_query", [False, True])
async def test_reconnecting_gives_exactly_the_missing_events(
    serve_live: LiveFactory, fake: FakeModel, use_query: bool
) -> None:
    fake.script("m", [call("add", {"a": 1, "b": 1}), call("add", {"a": 2, "b": 2}), text("4")])
    with serve_live() as live:
        run = await post(live, "/runs", {"agent": "calc", "input": "go"}, wait=10)
        replayed = await stream(live, run["id"])
        assert [e for e in replayed if e.event == "message.delta"] == []  # never replayed
        everything = stored(replayed)
        for cut in (0, 1, 5, len(everything) - 2, len(everything) - 1, len(everything)):
            after = int(everything[cut - 1].id) if cut else 0
            rest = stored(await stream(live, run["id"], after=after, use_query=use_query))
            assert [(e.id, e.event, e.data) for e in rest] == [
                (e.id, e.event, e.data) for e in everything[cut:]
            ]


async def test_a_live_stream_joins_the_replay_without_gap_or_duplicate(
    serve_live: LiveFactory, fake: FakeModel
) -> None:
    fake.script("m", [call("add", {"a": 1, "b": 1}), Reply(content="held here", hold_after=[1])])
    with serve_live() as live:
        run = await post(live, "/runs", {"agent": "calc", "input": "go"})
        collected: list[ServerSentEvent] = []
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                collected.extend(await stream(live, run["id"]))

            group.start_soon(watch)
            # The watcher is live by now or soon; the rest of the run happens meanwhile.
            assert await anyio.to_thread.run_sync(fake.wait_for_requests, 2, "m")
            fake.release()
        everything = stored(await stream(live, run["id"], after=0))

    assert [e.id for e in stored(collected)] == [e.id for e in everything]


async def test_cancel_ends_the_stream_with_run_cancelled(
    serve_live: LiveFactory, fake: FakeModel
) -> None:
    fake.script("m", [Reply(content="never finished", hold_after=[1])])
    with serve_live() as live:
        run = await post(live, "/runs", {"agent": "calc", "input": "go"})
        assert await anyio.to_thread.run_sync(fake.wait_for_requests, 1, "m")
        cancelled = await post(live, f"/runs/{run['id']}/cancel", {})
        events = await stream(live, run["id"])
        fake.release()

    assert cancelled["status"] in ("running", "cancelled")
    assert stored(events)[-1].event == "run.cancelled"
    assert json.loads(stored(events)[-1].data)["status"] == "cancelled"


async def test_unknown_run_and_bad_cursor(serve_live: LiveFactory) -> None:
    with serve_live() as live:
        missing = await get(live, "/runs/run_nope/events")
        run = await post(live, "/runs", {"agent": "calc", "input": "x"}, wait=10)
        bad = await get(live, f"/runs/{run['id']}/events?last_event_id=-3")
        huge = await get(live, f"/runs/{run['id']}/events?last_event_id={2**31}")
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            huge_header = await client.get(
                f"/runs/{run['id']}/events", headers={"Last-Event-ID": "9" * 25}
            )

    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert bad.status_code == huge.status_code == huge_header.status_code == 422


async def test_a_client_that_goes_away_leaves_nothing_behind(
    serve_live: LiveFactory, fake: FakeModel
) -> None:
    fake.script("m", [Reply(content="slow words here", hold_after=[1])])
    with serve_live() as live:
        baseline = live.watchers.count
        run = await post(live, "/runs", {"agent": "calc", "input": "go", "session_id": "s"})
        async with (
            httpx.AsyncClient(base_url=live.url, timeout=30) as client,
            aconnect_sse(client, "GET", f"/runs/{run['id']}/events") as source,
        ):
            async for _ in source.aiter_sse():
                assert live.watchers.count == baseline + 1
                break  # the client goes away mid-run
        assert await anyio.to_thread.run_sync(live.watchers.wait_for, baseline)
        fake.release()  # the first run goes on without its watcher
        fake.release()  # and the next one (after it, in its session) answers at once
        finished = await post(
            live, "/runs", {"agent": "calc", "input": "next", "session_id": "s"}, wait=10
        )
        first = (await get(live, f"/runs/{run['id']}")).json()

    assert finished["status"] == "completed"
    assert first["status"] == "completed"


async def test_a_reader_that_stops_reading_never_slows_the_run(
    serve_live: LiveFactory, fake: FakeModel
) -> None:
    words = " ".join(f"word{i}" for i in range(3000))
    fake.script("m", [Reply(content=words)])
    with serve_live() as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            run = (await client.post("/runs", json={"agent": "calc", "input": "go"})).json()
            request = client.build_request("GET", f"/runs/{run['id']}/events")
            response = await client.send(request, stream=True)  # opened, never read
            try:
                done = await client.post(
                    "/runs", params={"wait": 20}, json={"agent": "calc", "input": "and then"}
                )
                first = (await client.get(f"/runs/{run['id']}")).json()
            finally:
                await response.aclose()

    assert first["status"] == "completed"
    assert done.json()["status"] == "completed"


async def test_streaming_a_run_driven_by_a_worker_process(
    serve_live: LiveFactory, fake: FakeModel, start_worker: WorkerFactory
) -> None:
    # The answer waits until the watcher has seen the tool run, so its deltas are live.
    fake.script("m", [call("add", {"a": 20, "b": 22}), Reply(content="forty two", hold_after=[0])])
    with serve_live(with_executor=False) as live:  # an API-only process
        run = await post(live, "/runs", {"agent": "calc", "input": "sum"})
        worker = start_worker()
        received: list[ServerSentEvent] = []
        with anyio.fail_after(30):
            async with (
                httpx.AsyncClient(base_url=live.url, timeout=30) as client,
                aconnect_sse(client, "GET", f"/runs/{run['id']}/events") as source,
            ):
                async for event in source.aiter_sse():
                    received.append(event)
                    if event.event == "tool_call.completed":
                        fake.release()
        worker.terminate()
        assert worker.wait(timeout=20) == 0

    deltas = [json.loads(e.data) for e in received if e.event == "message.delta"]
    assert "".join(delta["text"] for delta in deltas) == "forty two"  # across processes
    events = stored(received)
    names = [event.event for event in events]
    assert names[0] == "run.queued"
    assert names[-1] == "run.completed"
    assert names.count("tool_call.completed") == 1
    assert [int(event.id) for event in events] == list(range(1, len(events) + 1))


async def test_cancelling_a_run_a_worker_process_drives(
    serve_live: LiveFactory, fake: FakeModel, start_worker: WorkerFactory
) -> None:
    fake.script("m", [Reply(content="never finished", hold_after=[1])])
    with serve_live(with_executor=False) as live:
        run = await post(live, "/runs", {"agent": "calc", "input": "go"})
        worker = start_worker()
        assert await anyio.to_thread.run_sync(fake.wait_for_requests, 1, "m")

        response = await post(live, f"/runs/{run['id']}/cancel", {})
        events = stored(await stream(live, run["id"]))
        fake.release()
        worker.terminate()
        assert worker.wait(timeout=20) == 0

    assert response["status"] == "running"  # flagged; the worker stops it
    assert events[-1].event == "run.cancelled"
    assert json.loads(events[-1].data)["status"] == "cancelled"


async def test_a_stream_ends_when_an_interrupt_cancels_its_parked_run(
    serve_live: LiveFactory, fake: FakeModel
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r"})])
    with serve_live() as live:
        parked = await post(
            live, "/runs", {"agent": "calc", "input": "del", "session_id": "s"}, wait=10
        )
        assert parked["status"] == "pending_approval"
        async with anyio.create_task_group() as group:
            events: list[ServerSentEvent] = []

            async def watch() -> None:
                events.extend(await stream(live, parked["id"]))

            group.start_soon(watch)
            assert await anyio.to_thread.run_sync(live.watchers.wait_for, 1)
            body = {"agent": "calc", "input": "x", "session_id": "s", "if_busy": "interrupt"}
            await post(live, "/runs", body)

    assert stored(events)[-1].event == "run.cancelled"
