"""What one client may cost the service: tool outputs cut at a limit, event streams bounded per
client and paged, request bodies that stall dropped (contract, "Text that can be stored, and
hostile clients")."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import event
from structlog.testing import capture_logs

from app.logs import drop_abandoned_stream_line
from app.store.runs import RunRepository
from app.store.tenancy import EVERY_TENANT
from app.testing import FakeModel, call, calls, text
from tests.api.conftest import Client, ClientFactory, Live, LiveFactory, services_of

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("fill", ["x", "é", "\U0001f600"])
async def test_a_tool_output_over_the_limit_is_cut_with_a_marker(
    make_client: ClientFactory, fake: FakeModel, fill: str
) -> None:
    fake.script("m", [call("long_text", {"kilobytes": 3000, "fill": fill}), text("read it")])
    async with make_client(max_tool_output_bytes=100_000) as client:
        created = await client.post(
            "/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"}
        )
    run = created.json()

    assert run["status"] == "completed"
    tool_call = run["steps"][0]["tool_calls"][0]
    assert tool_call["truncated"] is True
    output = tool_call["output"]
    kept, marker = output.rsplit("\n", 1)
    assert set(kept) == {fill}
    assert 100_000 - 4 < len(kept.encode()) <= 100_000  # cut on a character's edge
    cut = 3000 * 1024 // len(fill.encode()) * len(fill.encode()) - len(kept.encode())
    assert marker == (
        f"[output truncated: {cut} of {cut + len(kept.encode())} bytes cut at the limit of "
        "100000 bytes]"
    )
    # The model is sent the cut output, and the stored conversation holds the same.
    sent = fake.requests_for("m")[1]["messages"][-1]
    assert sent == {"role": "tool", "tool_call_id": tool_call["call_id"], "content": output}
    assert run["messages"][-2]["content"] == output


async def test_an_output_within_the_limit_is_whole(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", [call("long_text", {"kilobytes": 2}), text("read it")])
    async with make_client(max_tool_output_bytes=2048) as client:
        created = await client.post(
            "/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"}
        )

    tool_call = created.json()["steps"][0]["tool_calls"][0]
    assert tool_call["truncated"] is False
    assert tool_call["output"] == "x" * 2048


@pytest.fixture
def statements(client: Client) -> Iterator[list[str]]:
    """Every SQL statement the service sends while the test runs."""
    sent: list[str] = []
    engine = services_of(client).db.engine.sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine, "before_cursor_execute", record)


async def test_a_stream_reads_events_a_page_at_a_time_and_never_the_run_s_state(
    client: Client, fake: FakeModel, statements: list[str]
) -> None:
    fake.script(
        "m",
        [
            calls(*[("long_text", {"kilobytes": 400}) for _ in range(4)]),
            text("read them"),
        ],
    )
    run = await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"})
    run_id = run.json()["id"]
    statements.clear()

    async with client.stream("GET", f"/runs/{run_id}/events") as stream:
        body = "".join([chunk async for chunk in stream.aiter_text()])

    events = [line for line in body.splitlines() if line.startswith("event: ")]
    assert events[-1] == "event: run.completed"
    # The executor's claims (UPDATE ... RETURNING the run) may run meanwhile: reads only.
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    event_reads = [s for s in reads if "run_events" in s]
    # 8 events of 400 KB (each output is in its call's result and in its tool message):
    # pages of about 1 MiB hold two or three.
    assert 3 <= len(event_reads) <= 6
    assert not [s for s in reads if re.search(r"\bruns\.state\b", s)]


async def test_a_page_of_events_stops_at_its_size(client: Client, fake: FakeModel) -> None:
    fake.script("m", [calls(*[("long_text", {"kilobytes": 100}) for _ in range(3)]), text("ok")])
    run = await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"})
    run_id = run.json()["id"]

    async with services_of(client).db.read_scope() as session:
        runs = RunRepository(session, EVERY_TENANT)
        everything = await runs.events_after(run_id, 0, limit=200)
        big = [e.seq for e in everything if len(json.dumps(e.data)) > 100_000]
        assert len(big) == 6  # three results, three tool messages
        before_big = big[0] - 1
        one = await runs.events_after(run_id, before_big, limit=200, max_bytes=150_000)
        two = await runs.events_after(run_id, before_big, limit=200, max_bytes=250_000)
        at_least_one = await runs.events_after(run_id, before_big, limit=200, max_bytes=1)
        whole = await runs.events_after(run_id, 0, limit=200, max_bytes=10**9)

    assert [e.seq for e in one] == big[:1]
    assert [e.seq for e in two] == big[:2]
    assert [e.seq for e in at_least_one] == big[:1]
    assert [e.seq for e in whole] == [e.seq for e in everything]


KEYS = {"api_keys": SecretStr("a:key-of-a-0123456789,b:key-of-b-0123456789")}


def as_key(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer key-of-{name}-0123456789"}


@asynccontextmanager
async def open_stream(live: Live, run_id: str, key: str) -> AsyncIterator[httpx.Response]:
    """An event stream held open, its first event read (so it is surely registered)."""
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=10, headers=as_key(key)) as http,
        http.stream("GET", f"/runs/{run_id}/events") as response,
    ):
        lines = response.aiter_lines()  # kept: once collected, it would close the stream
        if response.status_code == 200:
            with anyio.fail_after(10):
                await anext(lines)
        yield response


async def test_a_client_holds_at_most_so_many_streams(
    serve_live: LiveFactory, fake: FakeModel
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("gone")])
    with serve_live(max_streams_per_client=2, **KEYS) as live:
        async with httpx.AsyncClient(base_url=live.url, headers=as_key("a")) as http:
            created = await http.post(
                "/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"}
            )
        run_id = created.json()["id"]  # parked: its streams stay open
        async with open_stream(live, run_id, "a") as first, open_stream(live, run_id, "a"):
            assert first.status_code == 200
            async with open_stream(live, run_id, "a") as third:
                assert third.status_code == 429
                assert third.headers["retry-after"] == "5"
                assert third.headers["content-type"] == "application/problem+json"
                problem = json.loads(await third.aread())
                assert problem["type"] == "/problems/too-many-streams"
            async with open_stream(live, run_id, "b") as others:
                assert others.status_code == 200  # another client's streams are its own
        # Both closed: their slots are free again once the server has seen them go.
        slots = live.services.stream_slots
        assert await anyio.to_thread.run_sync(
            comes_true, lambda: not slots.held("caller default/a")
        )
        async with open_stream(live, run_id, "a") as again:
            assert again.status_code == 200


def raw_request(url: str, head: bytes, *, receive_buffer: int | None = None) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    connection = socket.socket()
    if receive_buffer is not None:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    connection.settimeout(10)
    connection.connect((host, int(port)))
    connection.sendall(head)
    return connection


async def test_a_body_that_stalls_is_answered_408_and_dropped(serve_live: LiveFactory) -> None:
    with serve_live(request_body_timeout_seconds=0.5) as live:
        head = (
            b"POST /runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"agent": '
        )
        connection = raw_request(live.url, head)

        def read_until_closed() -> bytes:
            received = b""
            while chunk := connection.recv(65536):  # ends when the server closes (10 s bound)
                received += chunk
            return received

        with connection:
            answer = await anyio.to_thread.run_sync(read_until_closed)
        healthy = await httpx.AsyncClient(base_url=live.url).get("/healthz")

    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    assert b"connection: close" in rest.lower()
    problem = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert problem["type"] == "/problems/request-timeout"
    assert "REQUEST_BODY_TIMEOUT_SECONDS" in problem["detail"]
    assert healthy.status_code == 200


async def test_a_reader_that_stops_reading_is_dropped_with_one_info_line(
    serve_live: LiveFactory, fake: FakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script("m", [calls(*[("long_text", {"kilobytes": 1000}) for _ in range(10)]), text("ok")])
    server_log = logging.getLogger("uvicorn.error")
    server_log.addFilter(drop_abandoned_stream_line)
    try:
        with serve_live(sse_send_timeout_seconds=0.5) as live, capture_logs() as logs:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
                created = await http.post(
                    "/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"}
                )
            run_id = created.json()["id"]
            head = f"GET /runs/{run_id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            # ~20 MB of events to a client that reads none of them.
            with (
                caplog.at_level(logging.INFO, logger="uvicorn.error"),
                raw_request(live.url, head, receive_buffer=4096),
            ):
                assert await anyio.to_thread.run_sync(live.watchers.wait_for, 0, 20)
                assert await anyio.to_thread.run_sync(
                    comes_true, lambda: any(line["event"] == "stream.dropped" for line in logs)
                )
    finally:
        server_log.removeFilter(drop_abandoned_stream_line)

    dropped = [line for line in logs if line["event"] == "stream.dropped"]
    assert dropped == [
        {
            "event": "stream.dropped",
            "run_id": run_id,
            "reason": "the client stopped reading",
            "log_level": "info",
        }
    ]
    assert [line for line in logs if line["log_level"] in ("error", "critical")] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def comes_true(check: Callable[[], bool], seconds: float = 10) -> bool:
    """Whether `check` holds within `seconds`: for what the server's thread changes, with no
    signal to wait on."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
