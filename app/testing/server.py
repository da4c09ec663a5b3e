"""Serve an ASGI app (the fake model, or the service itself) on 127.0.0.1 from a background
thread, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.testing.fake_model import FakeModel

STARTUP_LIMIT_SECONDS = 30


class _StartupSignal:
    """Passes everything to the app and tells another thread when its startup has finished."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.done = threading.Event()
        self.succeeded = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def watch(message: Message) -> None:
            if message["type"] in ("lifespan.startup.complete", "lifespan.startup.failed"):
                self.succeeded = message["type"] == "lifespan.startup.complete"
                self.done.set()
            await send(message)

        await self.app(scope, receive, watch)


class ThreadedServer:
    """`with ThreadedServer(app) as server:` serves `app` at `server.url` until exit.

    The socket is bound and listening before the thread starts, so the first request needs no
    wait; its own event loop keeps the app answering even while a test's loop is blocked. With
    `lifespan=True` the app's startup has completed when the block begins.
    """

    def __init__(
        self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, lifespan: bool = False
    ) -> None:
        self._socket = socket.create_server((host, port))
        # asyncio only disables Nagle on sockets it knows are TCP; without this every response
        # body waits ~40 ms for the client's delayed ACK. Accepted sockets inherit the option.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        bound_host, bound_port = self._socket.getsockname()[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        self._startup = _StartupSignal(app)
        config = uvicorn.Config(
            self._startup,
            log_config=None,
            access_log=False,
            lifespan="on" if lifespan else "off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._lifespan = lifespan
        self._thread = threading.Thread(target=self._serve, name="threaded-server", daemon=True)

    def _serve(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def start(self) -> Self:
        self._thread.start()
        if self._lifespan and not (
            self._startup.done.wait(STARTUP_LIMIT_SECONDS) and self._startup.succeeded
        ):
            self.stop()
            raise RuntimeError("the app's startup failed or took too long")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class FakeModelServer(ThreadedServer):
    """`with FakeModelServer(fake) as server:` serves `fake` at `server.base_url` until exit."""

    def __init__(self, fake: FakeModel, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(fake.app, host=host, port=port)
        self.fake = fake
        self.base_url = f"{self.url}/v1"
