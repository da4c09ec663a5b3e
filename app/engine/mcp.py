"""MCP tool servers: their tools offered to agents like any tool, called through the official
`mcp` SDK over stdio or streamable HTTP.

A server is connected once and kept: its tools are listed at connection and again when it says
its list changed. A call to a server that is down, dropped or slow ends with an error text for
the model, and the next call connects again (a stdio server is started again). Each tool's
effect comes from its annotations, so a takeover repeats only read-only and idempotent calls.
"""

from __future__ import annotations

import contextlib
import json
import re
import string
from collections import OrderedDict
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, NoReturn, Self, TypeVar

import anyio
import httpx
import structlog
from anyio.abc import TaskGroup, TaskStatus
from mcp import ClientSession, McpError, StdioServerParameters
from mcp import types as mcp_types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from app.engine.context import RunContext
from app.engine.schema import foreign_schema
from app.engine.text import storable_text
from app.engine.tools import TOOL_NAME_PATTERN, Tool, ToolEffect, check_tool_name

log = structlog.get_logger("app.engine")

MCPApproval = Literal["destructive", "always", "never"]
MAX_TOOL_PAGES = 50  # a server paging its tool list forever is cut off there
_TRANSPORT_ERRORS = (OSError, httpx.HTTPError)
HTTP_READ_TIMEOUT_SECONDS = 300
# A server unavailable at start is tried again this often, twice as long each time.
FIRST_RETRY_SECONDS, LAST_RETRY_SECONDS = 1.0, 60.0
MAX_IDENTITY_CONNECTIONS = 32  # sessions kept for run identities (run_headers), per server
T = TypeVar("T")
# The SDK's answer, over streamable HTTP, to a request a restarted server refused (HTTP 404).
_SESSION_TERMINATED = (32600, "Session terminated")
_NAME = re.compile(TOOL_NAME_PATTERN)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110's token
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # all but a tab


class MCPToolError(Exception):
    """A call that did not give a result: the text says why, for the model."""


class _Undelivered(Exception):
    """A request that never reached the server."""

    def __init__(self, reason: Exception) -> None:
        super().__init__(str(reason))
        self.reason = reason


@dataclass(frozen=True, eq=False)
class MCPTool(Tool):
    """A tool of an MCP server, as the model is offered it (with the server's `prefix`)."""

    server: MCPServer | None = field(default=None, repr=False)
    remote_name: str = ""  # its name on the server

    async def invoke(self, arguments: Mapping[str, Any], ctx: RunContext) -> Any:
        assert self.server is not None
        return await self.server.call(self.remote_name, dict(arguments), ctx)


def _called_on_the_server(**_: Any) -> NoReturn:
    raise RuntimeError("an MCP tool runs on its server")


class MCPServer:
    """One MCP server: `url` (streamable HTTP, with `headers`) or `command` (stdio, with `args`,
    `env`). `tools` names the tools to offer (default all), `prefix` goes before each name,
    `approval` says which calls a person approves (`destructive`: those of tools not read-only
    and not marked `destructiveHint: false`), `effects` overrides an annotation's effect.
    `run_headers` (HTTP) takes headers from the run's identity: `{"Authorization": "Bearer
    {variables.token}", "X-User": "{principal.name}"}`; such calls go through a connection of
    that identity. Use it as an async context manager (the engine does), then `connect`; it
    keeps its connections and closes them on exit. Header values are never logged."""

    def __init__(
        self,
        name: str,
        *,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
        command: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        tools: Sequence[str] | None = None,
        prefix: str = "",
        approval: MCPApproval = "destructive",
        effects: Mapping[str, ToolEffect] | None = None,
        run_headers: Mapping[str, str] | None = None,
        timeout_seconds: float = 60.0,
        connect_timeout_seconds: float = 15.0,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a server name (1-64 of a-z A-Z 0-9 _ -)")
        if (url is None) == (command is None):
            raise ValueError(f"MCP server {name!r}: give a url (HTTP) or a command (stdio)")
        if run_headers and url is None:
            raise ValueError(f"MCP server {name!r}: run_headers are for a streamable HTTP server")
        check_run_headers(run_headers or {})
        for header, value in (headers or {}).items():
            # Told apart here, never echoed: a value is often a secret.
            if not _HEADER_NAME.fullmatch(header) or _CONTROL.search(value):
                raise ValueError(
                    f"MCP server {name!r}: header {header!r} has a name or value HTTP cannot "
                    "carry (a line break or another control character?)"
                )
        if approval not in ("destructive", "always", "never"):
            raise ValueError(f"MCP server {name!r}: approval must be destructive, always or never")
        if prefix:
            check_tool_name(prefix)
        self.name = name
        self.url = url
        self.headers = dict(headers or {})
        self.command = command
        self.args = list(args)
        self.env = None if env is None else dict(env)
        self.wanted = None if tools is None else list(tools)
        self.prefix = prefix
        self.approval: MCPApproval = approval
        self.effects = dict(effects or {})
        self.timeout_seconds = timeout_seconds
        self._call_timeout = timedelta(seconds=timeout_seconds)
        self.connect_timeout_seconds = connect_timeout_seconds
        self.run_headers = dict(run_headers or {})
        self.tools: dict[str, MCPTool] = {}  # by the name the model sees
        self._group: TaskGroup | None = None
        # The server's own connection lists its tools; a run's identity has one of its own.
        self._main = _Connection(self, self.headers, lists_tools=True)
        self._identities: OrderedDict[tuple[tuple[str, str], ...], _Connection] = OrderedDict()

    @property
    def available(self) -> bool:
        return self._main.session is not None

    @property
    def error(self) -> str | None:
        """Why the server is unavailable (or last dropped); None while connected."""
        return self._main.error

    @property
    def transport(self) -> Literal["http", "stdio"]:
        return "http" if self.url is not None else "stdio"

    async def __aenter__(self) -> Self:
        if self._group is not None:
            # Its connections live in one task group, left by the task that entered it.
            raise RuntimeError(f"MCP server {self.name!r} is already in use by another engine")
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        return self

    async def connect(self) -> bool:
        """Connect now (`__aenter__` only gets ready): whether the server could be reached. One
        that cannot is said in the log and in `error`, and tried again in the background until
        it answers: its tools were never listed, so no call would try."""
        with contextlib.suppress(MCPToolError):
            await self._main.open()
        if not self.available and self._group is not None:
            self._group.start_soon(self._keep_trying)
        return self.available

    async def _keep_trying(self) -> None:
        delay = FIRST_RETRY_SECONDS
        while not self.available:
            await anyio.sleep(delay)
            delay = min(delay * 2, LAST_RETRY_SECONDS)
            with contextlib.suppress(MCPToolError):
                await self._main.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        if group is None:
            return
        group.cancel_scope.cancel()
        await group.__aexit__(None, None, None)
        self._identities.clear()

    async def call(self, remote_name: str, arguments: dict[str, Any], ctx: RunContext) -> str:
        """The tool's result as text; raises `MCPToolError` with the reason when there is none.

        A request the old session could not deliver (its server restarted or died while idle)
        goes once more on a new session: it never reached the server, so it cannot run twice.
        """
        for attempt in (1, 2):
            connection = self._connection_for(ctx)
            connection.calls += 1  # a busy connection is not closed to make room for another
            try:
                session, gone = await connection.open()
                result = await self._ask(session, gone, remote_name, arguments)
            except _Undelivered as undelivered:
                connection.drop(undelivered.reason)
                if attempt == 1:
                    continue
                raise MCPToolError(
                    f"MCP server {self.name!r} could not be reached: {connection.error}"
                ) from undelivered.reason
            except McpError as exc:
                if exc.error.code != mcp_types.CONNECTION_CLOSED:
                    raise MCPToolError(f"MCP server {self.name!r}: {exc.error.message}") from exc
                connection.drop(exc)
                raise MCPToolError(self._dropped_mid_call(connection)) from exc
            except TimeoutError as exc:
                raise MCPToolError(
                    f"MCP server {self.name!r} gave no answer in {self.timeout_seconds:g} s"
                ) from exc
            except _TRANSPORT_ERRORS as exc:
                connection.drop(exc)
                raise MCPToolError(self._dropped_mid_call(connection)) from exc
            finally:
                connection.calls -= 1
            if result is None:
                raise MCPToolError(self._dropped_mid_call(connection))
            text = result_text(result)
            if result.isError:
                raise MCPToolError(text or f"the tool {remote_name} of {self.name!r} failed")
            return text
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _ask(
        self,
        session: ClientSession,
        gone: anyio.Event,
        remote_name: str,
        arguments: dict[str, Any],
    ) -> mcp_types.CallToolResult | None:
        """The call's result, None once the session is gone; raises `_Undelivered` for a
        request that never left."""
        try:
            with anyio.fail_after(self.timeout_seconds + 1):
                return await _unless(
                    gone,
                    session.call_tool(
                        remote_name, arguments, read_timeout_seconds=self._call_timeout
                    ),
                )
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            # Raised by sending into a session whose transport has ended.
            raise _Undelivered(exc) from exc
        except McpError as exc:
            if (exc.error.code, exc.error.message) == _SESSION_TERMINATED:
                # The server restarted and no longer knows the session: it refused the request.
                raise _Undelivered(exc) from exc
            raise

    def _dropped_mid_call(self, connection: _Connection) -> str:
        # The model and a person reading the run must not take it for "not done".
        return (
            f"MCP server {self.name!r} dropped the connection ({connection.error or 'closed'}): "
            "the call may or may not have been done"
        )

    def _connection_for(self, ctx: RunContext | None) -> _Connection:
        """The server's own connection, or with `run_headers` the run identity's: headers are
        a connection's, so each identity has its own (the least recently used are closed)."""
        if not self.run_headers or ctx is None:
            return self._main
        headers = {**self.headers, **run_headers_of(self.run_headers, ctx)}
        key = tuple(sorted(headers.items()))
        connection = self._identities.pop(key, None) or _Connection(self, headers)
        self._identities[key] = connection
        while len(self._identities) > MAX_IDENTITY_CONNECTIONS:
            idle = next((k for k, c in self._identities.items() if c.calls == 0), None)
            if idle is None or idle == key:
                break  # every other one is in use: the pool shrinks back as they are reused
            self._identities.pop(idle).close()
        return connection

    async def _on_message(self, message: Any) -> None:
        # The SDK reads the next message only after this returns: the new list is asked for in
        # a task of its own.
        session = self._main.session
        if (
            isinstance(message, mcp_types.ServerNotification)
            and isinstance(message.root, mcp_types.ToolListChangedNotification)
            and session is not None
            and self._group is not None
        ):
            self._group.start_soon(self._refresh, session)

    async def _refresh(self, session: ClientSession) -> None:
        try:
            await self._list_tools(session)
        except Exception as exc:
            log.warning("mcp.list_failed", server=self.name, error=_described(exc))
            return
        log.info("mcp.tools_changed", server=self.name, tools=sorted(self.tools))

    async def _list_tools(self, session: ClientSession) -> None:
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            page = await session.list_tools(cursor)
            listed += page.tools
            cursor = page.nextCursor
            if not cursor:
                break
        wanted = None if self.wanted is None else set(self.wanted)
        tools: dict[str, MCPTool] = {}
        for remote in listed:
            if wanted is not None and remote.name not in wanted:
                continue
            try:
                offered = self._tool(remote)
            except ValueError as exc:
                log.warning("mcp.tool_skipped", server=self.name, tool=remote.name, reason=str(exc))
                continue
            tools[offered.name] = offered
        if wanted is not None and (missing := wanted - {t.name for t in listed}):
            log.warning("mcp.tools_missing", server=self.name, tools=sorted(missing))
        self.tools = tools

    def _tool(self, remote: mcp_types.Tool) -> MCPTool:
        hints = remote.annotations or mcp_types.ToolAnnotations()
        return MCPTool(
            name=self.prefix + remote.name,
            function=_called_on_the_server,
            schema=foreign_schema(remote.description or remote.title or "", remote.inputSchema),
            needs_approval=self._needs_approval(hints),
            effect=self.effects.get(remote.name) or _effect(hints),
            server=self,
            remote_name=remote.name,
        )

    def _needs_approval(self, hints: mcp_types.ToolAnnotations) -> bool:
        if self.approval != "destructive":
            return self.approval == "always"
        # The spec's defaults: a tool is destructive unless it says it is read-only, or says
        # it is not destructive.
        return not hints.readOnlyHint and hints.destructiveHint is not False


async def _unless(gone: anyio.Event, request: Awaitable[T]) -> T | None:
    """The request's answer, or None once the connection is gone: the SDK leaves a request
    waiting for its timeout when its HTTP transport fails."""
    answer: list[T] = []
    failure: list[Exception] = []
    async with anyio.create_task_group() as race:

        async def ask() -> None:
            try:
                answer.append(await request)
            except Exception as exc:  # raised as itself below, not in a group
                failure.append(exc)
            race.cancel_scope.cancel()

        async def watch() -> None:
            await gone.wait()
            race.cancel_scope.cancel()

        race.start_soon(ask)
        race.start_soon(watch)
    if failure:
        raise failure[0]
    return answer[0] if answer else None


class _Connection:
    """One session with a server, opened and held by a task of the server's group (the SDK's
    contexts are entered and left in one task) until it drops or is closed."""

    def __init__(
        self, server: MCPServer, headers: dict[str, str], *, lists_tools: bool = False
    ) -> None:
        self.server = server
        self.headers = headers
        self.lists_tools = lists_tools
        self.session: ClientSession | None = None
        self.gone: anyio.Event | None = None  # set once this session ends
        self.calls = 0  # in flight, connecting included
        self.error: str | None = "not connected yet"
        self._lock = anyio.Lock()

    async def open(self) -> tuple[ClientSession, anyio.Event]:
        """The session, and the event set once it is gone; connects when there is none."""
        server = self.server
        async with self._lock:
            if self.session is not None and self.gone is not None:
                return self.session, self.gone
            if server._group is None:
                raise MCPToolError(f"MCP server {server.name!r} is not started")
            try:
                with anyio.fail_after(server.connect_timeout_seconds):
                    await server._group.start(self._hold)
            except Exception as exc:
                self.error = _described(exc)
                log.warning("mcp.unavailable", server=server.name, error=self.error)
                raise MCPToolError(
                    f"MCP server {server.name!r} is unavailable: {self.error}"
                ) from exc
            self.error = None
            if self.lists_tools:
                log.info("mcp.connected", server=server.name, tools=sorted(server.tools))
            assert self.session is not None
            assert self.gone is not None
            return self.session, self.gone

    async def _hold(self, *, task_status: TaskStatus[None]) -> None:
        server = self.server
        gone = anyio.Event()
        started = False
        try:
            async with AsyncExitStack() as stack:
                read, write = await _open_transport(server, stack, self.headers)
                handler = server._on_message if self.lists_tools else None
                session = await stack.enter_async_context(
                    ClientSession(read, write, message_handler=handler)
                )
                await session.initialize()
                if self.lists_tools:
                    await server._list_tools(session)
                self.session, self.gone = session, gone
                started = True
                task_status.started()
                await gone.wait()
        except Exception as exc:
            if not started:
                raise
            self.error = _described(exc)
            log.warning("mcp.dropped", server=server.name, error=self.error)
        finally:
            gone.set()  # calls waiting on this session end now
            if self.gone is gone:
                self.session, self.gone = None, None

    def drop(self, reason: BaseException) -> None:
        """Forget a broken session: its holder closes it, the next call opens another."""
        self.error = _described(reason)
        log.warning("mcp.dropped", server=self.server.name, error=self.error)
        self.close()

    def close(self) -> None:
        if self.gone is not None:
            self.gone.set()
        self.session, self.gone = None, None


async def _open_transport(
    server: MCPServer, stack: AsyncExitStack, headers: dict[str, str]
) -> tuple[Any, Any]:
    """The transport's read and write streams, closed with `stack`."""
    if server.url is not None:
        # A response stream may stay open a long time: the SDK's own read timeout.
        timeout = httpx.Timeout(server.connect_timeout_seconds, read=HTTP_READ_TIMEOUT_SECONDS)
        client = await stack.enter_async_context(
            httpx.AsyncClient(headers=headers, timeout=timeout)
        )
        read, write, _ = await stack.enter_async_context(
            streamable_http_client(server.url, http_client=client)
        )
        return read, write
    assert server.command is not None
    parameters = StdioServerParameters(command=server.command, args=server.args, env=server.env)
    return await stack.enter_async_context(stdio_client(parameters))


_PLACE = re.compile(r"^(principal\.(name|tenant)|principal\.claims\.[\w.-]+|variables\.[\w.-]+)$")


def check_run_headers(templates: Mapping[str, str]) -> None:
    """Refuse a template naming anything but `principal.name`, `principal.tenant`,
    `principal.claims.<claim>` or `variables.<name>`."""
    for header, template in templates.items():
        if not _HEADER_NAME.fullmatch(header) or _CONTROL.search(template):
            raise ValueError(f"run header {header!r}: not a name or template HTTP can carry")
        for _, place, spec, conversion in string.Formatter().parse(template):
            if place is None:
                continue
            if not _PLACE.match(place) or spec or conversion:
                raise ValueError(
                    f"run header {header!r}: {{{place}}} is not principal.name, "
                    "principal.tenant, principal.claims.<claim> or variables.<name>"
                )


def run_headers_of(templates: Mapping[str, str], ctx: RunContext) -> dict[str, str]:
    """The headers of a run's identity; a value the run does not have fails the call rather
    than send a header without it."""
    headers: dict[str, str] = {}
    for header, template in templates.items():
        parts: list[str] = []
        for literal, place, _, _ in string.Formatter().parse(template):
            parts.append(literal)
            if place is not None:
                parts.append(_identity_value(place, ctx, header))
        headers[header] = "".join(parts)
    return headers


def _identity_value(place: str, ctx: RunContext, header: str) -> str:
    source, _, key = place.partition(".")
    value: object
    if source == "variables":
        value = ctx.variables.get(key)
    elif key == "name":
        value = ctx.principal.name
    elif key == "tenant":
        value = ctx.principal.tenant
    else:
        value = ctx.principal.claims.get(key.removeprefix("claims."))
    if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
        raise MCPToolError(f"the call needs {place} for the header {header}, and the run has none")
    text = str(value)
    if _CONTROL.search(text):
        raise MCPToolError(
            f"{place} cannot go in the header {header}: it holds a control character"
        )
    return text


def _effect(hints: mcp_types.ToolAnnotations) -> ToolEffect:
    if hints.readOnlyHint:
        return "read"
    if hints.idempotentHint:
        return "idempotent"
    return "unsafe"


def result_text(result: mcp_types.CallToolResult) -> str:
    """What the model reads of a result: its content blocks (text as is; images, audio and
    resources described), else its structured content as JSON. The spec asks a server giving
    structured content to give its JSON as text too, which servers (FastMCP) do."""
    if not result.content and result.structuredContent is not None:
        return storable_text(json.dumps(result.structuredContent, ensure_ascii=False))
    return storable_text("\n".join(_block_text(block) for block in result.content))


def _block_text(block: mcp_types.ContentBlock) -> str:
    match block:
        case mcp_types.TextContent(text=text):
            return text
        case mcp_types.ImageContent(mimeType=mime, data=data):
            return f"[image: {mime}, {_decoded_size(data)} bytes]"
        case mcp_types.AudioContent(mimeType=mime, data=data):
            return f"[audio: {mime}, {_decoded_size(data)} bytes]"
        case mcp_types.ResourceLink(uri=uri, name=name):
            return f"[resource link: {name} <{uri}>]"
        case mcp_types.EmbeddedResource(resource=mcp_types.TextResourceContents() as resource):
            return f"[resource <{resource.uri}>]\n{resource.text}"
        case mcp_types.EmbeddedResource(resource=resource):
            return f"[resource <{resource.uri}>: {resource.mimeType or 'binary'}]"


def _decoded_size(base64_data: str) -> int:
    """The size of base64 data once decoded, without decoding it."""
    return len(base64_data) * 3 // 4 - base64_data[-2:].count("=")


def _described(exc: BaseException) -> str:
    """An error in a line: the first of a group's, with its type when it says nothing."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, McpError):
        return exc.error.message
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
