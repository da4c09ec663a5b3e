"""Serve a `FakeModel` on 127.0.0.1 from a background thread, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType

import uvicorn

from app.testing.fake_model import FakeModel


class FakeModelServer:
    """`with FakeModelServer(fake) as server:` serves `fake` at `server.base_url` until exit.

    The socket is bound and listening before the thread starts, so the first request needs no
    wait; its own event loop keeps the fake answering even while a test's loop is blocked.
    """

    def __init__(self, fake: FakeModel, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fake = fake
        self._socket = socket.create_server((host, port))
        # asyncio only disables Nagle on sockets it knows are TCP; without this every response
        # body waits ~40 ms for the client's delayed ACK. Accepted sockets inherit the option.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        bound_host, bound_port = self._socket.getsockname()[:2]
        self.base_url = f"http://{bound_host}:{bound_port}/v1"
        config = uvicorn.Config(
            fake.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="fake-model", daemon=True)

    def _serve(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def start(self) -> FakeModelServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
