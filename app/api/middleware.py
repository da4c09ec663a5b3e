"""Pure ASGI middleware: a log line per request, a bound on request bodies, and a refusal of NUL
characters in URLs."""

from __future__ import annotations

import time

import anyio
import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import problem
from app.api.schemas import ProblemError, unstorable_message

log = structlog.get_logger("app.api")


class RequestLog:
    """One log line per request, with its status and duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                # The principal's name and tenant, set by auth: never its key or token.
                caller=scope.get("state", {}).get("caller"),
                tenant=scope.get("state", {}).get("tenant"),
            )


class RefuseNul:
    """A NUL in a path or query is never a valid id or filter, and PostgreSQL text cannot hold
    one: refuse it (422, as in a body) before it reaches a query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").lower()
            where = "path" if "\x00" in scope["path"] else None
            if b"%00" in query or b"\x00" in query:
                where = "query"
            if where is not None:
                message = unstorable_message("\x00")
                error = ProblemError(loc=[where], msg=message)
                await problem(422, f"{where}: {message}", errors=[error])(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyTimeout:
    """A request body must arrive whole within `seconds` of the request's start: a client that
    stalls gets 408 and its connection is closed, instead of holding it open forever."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.seconds
        body_received = False

        async def timed() -> Message:
            nonlocal body_received
            if body_received:  # what follows is the wait for a disconnect: no deadline
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()):
                message = await receive()
                body_received = message["type"] != "http.request" or not message.get("more_body")
                return message
            raise HTTPException(408, self._detail(), headers={"Connection": "close"})

        await self.app(scope, timed, send)

    def _detail(self) -> str:
        return (
            f"The request body did not arrive within {self.seconds:g} seconds "
            "(REQUEST_BODY_TIMEOUT_SECONDS)."
        )


class LimitBody:
    """Bodies over `max_bytes` get 413: at once when Content-Length says so, else as soon as the
    bytes read pass the limit, never after buffering the whole body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counted, send)

    def _detail(self) -> str:
        return f"The request body is larger than {self.max_bytes} bytes (MAX_REQUEST_BYTES)."

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, self._detail(), headers={"Connection": "close"})
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
