"""MCP tools in the engine, against real FastMCP servers over stdio and streamable HTTP."""

from __future__ import annotations

import base64
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
import structlog
from mcp import types as mcp_types
from pydantic import AnyUrl

from app import Agent, Principal, tool
from app.engine import Completed, DecisionInput, Engine, RunState, RunStatus
from app.engine.mcp import MCPServer, MCPTool, result_text
from app.engine.state import CallStatus
from app.testing import FakeModel, call, text
from tests.engine.conftest import EngineFactory, Recorder
from tests.mcp.conftest import HttpServer, Journal, stdio_server
from tests.processes.conftest import until

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def connected(engine: Engine) -> AsyncIterator[Engine]:
    await engine.connect()
    try:
        yield engine
    finally:
        await engine.aclose()


async def eventually(check: Callable[[], object], what: str) -> None:
    """Another process (the server) makes it true: polled, bounded, off the event loop."""
    await anyio.to_thread.run_sync(until, check, 20, what)


def tool_outputs(state: RunState) -> list[str]:
    return [m["content"] for m in state.messages if m["role"] == "tool"]


def offered(fake: FakeModel, request: int = 0) -> list[str]:
    return [t["function"]["name"] for t in fake.requests_for("m")[request].get("tools", [])]


async def test_a_stdio_server_s_tools_are_offered_with_effects_from_their_annotations(
    make_engine: EngineFactory, fake: FakeModel, journal: Journal
) -> None:
    server = stdio_server(journal)
    engine = make_engine([Agent(name="a", model="m", mcp_servers=[server])])
    async with connected(engine):
        tools = engine.agents.get("a").tool_table()

        assert server.available
        lookup, put, delete_row = tools["lookup"], tools["put"], tools["delete_row"]
        assert isinstance(lookup, MCPTool)
        assert (lookup.effect, lookup.approval_mode) == ("read", "never")
        assert (put.effect, put.approval_mode) == ("idempotent", "never")
        assert (delete_row.effect, delete_row.approval_mode) == ("unsafe", "always")
        assert lookup.description == "Look a key up."
        assert lookup.schema.json_schema["properties"]["key"]["type"] == "string"


async def test_calls_give_text_json_and_described_images_and_a_failure_is_a_text(
    make_engine: EngineFactory, fake: FakeModel, journal: Journal
) -> None:
    fake.script(
        "m",
        [
            call("lookup", {"key": "k1"}),
            call("stats"),
            call("picture"),
            call("broken"),
            text("done"),
        ],
    )
    engine = make_engine([Agent(name="a", model="m", mcp_servers=[stdio_server(journal)])])
    async with connected(engine):
        state = engine.start("a", "go")
        await engine.run(state)

    assert state.status is RunStatus.COMPLETED
    lookup, stats, picture, broken = tool_outputs(state)
    assert lookup == "value of k1"
    assert json.loads(stats) == {"rows": 3, "tables": 1}
    assert picture.startswith("[image: image/png, ")
    assert "the table is locked" in broken
    assert state.steps[3].tool_calls[0].tool_failed


async def test_a_prefix_and_a_tools_list_choose_and_name_what_is_offered(
    make_engine: EngineFactory, fake: FakeModel, journal: Journal
) -> None:
    server = stdio_server(journal, tools=["lookup", "put"], prefix="db_")
    fake.script("m", [call("db_lookup", {"key": "k"}), text("ok")])
    engine = make_engine([Agent(name="a", model="m", mcp_servers=[server])])
    async with connected(engine):
        state = engine.start("a", "go")
        await engine.run(state)

    assert sorted(offered(fake)) == ["db_lookup", "db_put"]
    assert tool_outputs(state) == ["value of k"]


async def test_the_approval_policy_and_effects_override_the_annotations(
    make_engine: EngineFactory, journal: Journal
) -> None:
    always = stdio_server(journal, name="always", approval="always", prefix="x_")
    never = stdio_server(journal, name="never", approval="never", effects={"put": "unsafe"})
    engine = make_engine([Agent(name="a", model="m", mcp_servers=[always, never])])
    async with connected(engine):
        tools = engine.agents.get("a").tool_table()

    assert tools["x_lookup"].approval_mode == "always"
    assert tools["delete_row"].approval_mode == "never"
    assert tools["put"].effect == "unsafe"


async def test_two_tools_of_one_name_refuse_the_start_naming_both(
    make_engine: EngineFactory, journal: Journal
) -> None:
    @tool
    def lookup(key: str) -> str:
        """The agent's own lookup."""
        return key

    engine = make_engine(
        [Agent(name="a", model="m", tools=[lookup], mcp_servers=[stdio_server(journal)])]
    )
    with pytest.raises(ValueError, match="two tools named 'lookup'") as refused:
        await engine.connect()
    await engine.aclose()
    assert "its own tool 'lookup'" in str(refused.value)
    assert "the tool 'lookup' of MCP server 'db'" in str(refused.value)


async def test_an_agent_naming_an_undefined_server_is_refused(make_engine: EngineFactory) -> None:
    with pytest.raises(ValueError, match="uses MCP server 'github', which is not defined"):
        make_engine([Agent(name="a", mcp_servers=["github"])])


async def test_a_server_that_cannot_be_reached_is_unavailable_and_its_calls_are_errors(
    make_engine: EngineFactory, fake: FakeModel, journal: Journal
) -> None:
    down = MCPServer("down", url="http://127.0.0.1:9/mcp", connect_timeout_seconds=3)
    fake.script("m", [text("fine")])
    engine = make_engine([Agent(name="a", model="m", mcp_servers=[down])])
    async with connected(engine):
        assert not down.available
        assert down.error
        state = engine.start("a", "go")
        await engine.run(state)
        with pytest.raises(Exception, match="MCP server 'down' is unavailable"):
            await down.call("lookup", {}, ctx=None)  # type: ignore[arg-type]

    assert state.status is RunStatus.COMPLETED  # its tools are simply not offered


@pytest.mark.parametrize("crash", ["crash_reading", "crash_writing"])
async def test_a_server_killed_mid_call_gives_an_error_and_is_started_again_on_the_next(
    make_engine: EngineFactory, fake: FakeModel, journal: Journal, crash: str
) -> None:
    fake.script("m", [call(crash), call("lookup", {"key": "k"}), text("ok")])
    server = stdio_server(journal, approval="never")
    engine = make_engine([Agent(name="a", model="m", mcp_servers=[server])])
    async with connected(engine):
        state = engine.start("a", "go")
        await engine.run(state)

    assert state.status is RunStatus.COMPLETED
    crashed, looked_up = tool_outputs(state)
    assert "MCP server 'db' dropped the connection" in crashed
    assert "may or may not have been done" in crashed
    assert looked_up == "value of k"
    assert len(journal.entries("started")) == 2  # the server process, started again


async def test_a_slow_call_is_bounded_by_the_server_s_timeout(
    make_engine: EngineFactory, fake: FakeModel, journal: Journal
) -> None:
    server = stdio_server(journal, timeout_seconds=0.5)
    fake.script("m", [call("slow", {"seconds": 5}), text("gave up")])
    engine = make_engine([Agent(name="a", model="m", mcp_servers=[server])])
    async with connected(engine):
        state = engine.start("a", "go")
        await engine.run(state)

    [output] = tool_outputs(state)
    assert "MCP server 'db'" in output
    assert state.status is RunStatus.COMPLETED


async def test_a_changed_tool_list_is_offered_from_the_next_turn(
    make_engine: EngineFactory, fake: FakeModel, journal: Journal
) -> None:
    fake.script("m", [call("grow"), call("fresh"), text("ok")])
    server = stdio_server(journal)
    engine = make_engine([Agent(name="a", model="m", mcp_servers=[server])])
    async with connected(engine):
        state = engine.start("a", "go")
        await engine.advance(state)
        await eventually(lambda: "fresh" in server.tools, "the new tool list")
        await engine.run(state)

    assert "fresh" not in offered(fake, 0)
    assert "fresh" in offered(fake, 1)
    assert tool_outputs(state) == ["grown", "fresh result"]


@pytest.mark.parametrize(("tool_name", "repeated"), [("slow", True), ("slow_write", False)])
async def test_a_call_cut_off_by_a_crash_is_repeated_only_when_read_only(
    make_engine: EngineFactory,
    fake: FakeModel,
    journal: Journal,
    tool_name: str,
    repeated: bool,
) -> None:
    """The executor died mid-call (the task is cancelled); the stored state goes to another,
    which runs a read-only call again and parks an unsafe one in doubt."""
    fake.script("m", [call(tool_name, {"seconds": 1}), text("ok")])
    agent = Agent(name="a", model="m", mcp_servers=[stdio_server(journal, approval="never")])
    engine = make_engine([agent])
    recorder = Recorder()
    async with connected(engine):
        state = engine.start("a", "go")
        async with anyio.create_task_group() as group:
            group.start_soon(engine.run, state, recorder)
            await eventually(lambda: journal.entries(f"{tool_name}.started"), "the call")
            group.cancel_scope.cancel()
        stored, _ = recorder.checkpoints[-1]
        resumed = RunState.from_json(stored)
        assert resumed.steps[-1].tool_calls[0].status is CallStatus.RUNNING
        await engine.run(resumed)

        if repeated:
            assert resumed.status is RunStatus.COMPLETED
            assert len(journal.entries(f"{tool_name}.started")) == 2
        else:
            assert resumed.status is RunStatus.PENDING_APPROVAL
            [pending] = resumed.pending_approvals
            assert pending.in_doubt
            engine.decide(resumed, [DecisionInput(pending.call_id, False, "done already")])
            result = await engine.run(resumed)
            assert isinstance(result.outcome, Completed)
            assert len(journal.entries(f"{tool_name}.started")) == 1


async def test_a_streamable_http_server_is_called_with_its_headers_and_reconnected(
    make_engine: EngineFactory, fake: FakeModel, http_server: HttpServer
) -> None:
    server = MCPServer("web", url=http_server.url, headers={"X-User": "svc"})
    fake.script(
        "m",
        [
            call("whoami"),
            call("lookup", {"key": "a"}),
            call("lookup", {"key": "b"}),
            call("lookup", {"key": "c"}),
            text("ok"),
        ],
    )
    engine = make_engine([Agent(name="a", model="m", mcp_servers=[server])])
    async with connected(engine):
        assert server.available
        state = engine.start("a", "go")
        await engine.advance(state)
        await engine.advance(state)
        http_server.stop()
        await engine.advance(state)  # the server is gone: an error text
        http_server.start()
        await engine.run(state)

    whoami, first, gone, again = tool_outputs(state)
    assert whoami == "svc"
    assert first == "value of a"
    assert "MCP server 'web'" in gone
    assert again == "value of c"  # connected again
    assert state.status is RunStatus.COMPLETED


async def test_run_headers_carry_each_run_s_identity_and_are_never_logged(
    make_engine: EngineFactory, fake: FakeModel, http_server: HttpServer
) -> None:
    server = MCPServer(
        "web", url=http_server.url, run_headers={"X-User": "{principal.name}:{variables.token}"}
    )
    engine = make_engine([Agent(name="a", model="m", mcp_servers=[server])])
    outputs: list[str] = []
    with structlog.testing.capture_logs() as logs:
        async with connected(engine):
            for who, variables in [("lee", {"token": "t-lee"}), ("kim", {"token": "t-kim"})]:
                fake.script("m", [call("whoami"), text("ok")])
                state = engine.start("a", "who?", variables=variables)
                await engine.run(state, principal=Principal(who))
                outputs += tool_outputs(state)
            fake.script("m", [call("whoami"), text("ok")])
            state = engine.start("a", "who?")
            await engine.run(state, principal=Principal("nobody"))
            outputs += tool_outputs(state)

    lee, kim, without = outputs
    assert (lee, kim) == ("lee:t-lee", "kim:t-kim")
    assert "needs variables.token for the header X-User" in without
    assert not any("t-lee" in repr(entry) for entry in logs)


def test_a_run_header_names_only_the_principal_or_variables() -> None:
    with pytest.raises(ValueError, match=r"\{settings.secret\} is not principal.name"):
        MCPServer("web", url="http://127.0.0.1:1/mcp", run_headers={"X": "{settings.secret}"})
    with pytest.raises(ValueError, match="run_headers are for a streamable HTTP server"):
        MCPServer("s", command="true", run_headers={"X": "{principal.name}"})


def test_a_header_http_cannot_carry_is_refused_without_echoing_its_value() -> None:
    with pytest.raises(ValueError, match="header 'Authorization'") as refused:
        MCPServer("web", url="http://127.0.0.1:1/mcp", headers={"Authorization": "sk-1\n"})
    assert "sk-1" not in str(refused.value)
    with pytest.raises(ValueError, match="not a name or template"):
        MCPServer("web", url="http://127.0.0.1:1/mcp", run_headers={"X User": "{principal.name}"})


def test_results_read_as_text_with_images_audio_and_resources_described() -> None:
    pixel = base64.b64encode(b"0123456789").decode()
    result = mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(type="text", text="Here:"),
            mcp_types.ImageContent(type="image", data=pixel, mimeType="image/png"),
            mcp_types.AudioContent(type="audio", data=pixel, mimeType="audio/wav"),
            mcp_types.EmbeddedResource(
                type="resource",
                resource=mcp_types.TextResourceContents(
                    uri=AnyUrl("file:///notes/a.md"), text="# A", mimeType="text/markdown"
                ),
            ),
            mcp_types.EmbeddedResource(
                type="resource",
                resource=mcp_types.BlobResourceContents(
                    uri=AnyUrl("file:///b.bin"), blob=pixel, mimeType="application/pdf"
                ),
            ),
            mcp_types.ResourceLink(type="resource_link", uri=AnyUrl("file:///c.txt"), name="c"),
        ]
    )

    assert result_text(result).splitlines() == [
        "Here:",
        "[image: image/png, 10 bytes]",
        "[audio: audio/wav, 10 bytes]",
        "[resource <file:///notes/a.md>]",
        "# A",
        "[resource <file:///b.bin>: application/pdf]",
        "[resource link: c <file:///c.txt>]",
    ]
    structured_only = mcp_types.CallToolResult(content=[], structuredContent={"rows": 3})
    assert result_text(structured_only) == '{"rows": 3}'


async def test_a_server_down_at_start_is_tried_again_until_it_answers(
    make_engine: EngineFactory, fake: FakeModel, journal: Journal
) -> None:
    http_server = HttpServer(journal)
    server = MCPServer("late", url=http_server.url, connect_timeout_seconds=2)
    engine = make_engine([Agent(name="a", model="m", mcp_servers=[server])])
    async with connected(engine):
        assert not server.available
        assert engine.agents.get("a").tool_table() == {}
        http_server.start()
        try:
            await eventually(lambda: server.available, "the server to be connected")
            fake.script("m", [call("lookup", {"key": "k"}), text("ok")])
            state = engine.start("a", "go")
            await engine.run(state)
        finally:
            http_server.stop()

    assert tool_outputs(state) == ["value of k"]


async def test_a_server_that_died_or_restarted_while_idle_takes_the_next_call_on_a_new_session(
    make_engine: EngineFactory, fake: FakeModel, journal: Journal, http_server: HttpServer
) -> None:
    """The old session cannot deliver the request (a closed pipe; a restarted HTTP server that
    no longer knows the session): it never reached the server, so it goes on a new one."""
    stdio = stdio_server(journal, name="local", prefix="local_")
    web = MCPServer("web", url=http_server.url, prefix="web_")
    engine = make_engine([Agent(name="a", model="m", mcp_servers=[stdio, web])])
    async with connected(engine):
        [stdio_process] = [e for e in journal.entries("started") if e["argv"] == []]
        os.kill(stdio_process["pid"], signal.SIGKILL)
        http_server.stop()
        http_server.start()
        fake.script(
            "m",
            [call("local_lookup", {"key": "a"}), call("web_lookup", {"key": "b"}), text("ok")],
        )
        state = engine.start("a", "go")
        await engine.run(state)

    assert tool_outputs(state) == ["value of a", "value of b"]
