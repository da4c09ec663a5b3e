"""Event streams as HTTP responses: at most MAX_STREAMS_PER_CLIENT open per client, and a
reader too slow to keep up dropped with one log line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import structlog
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

log = structlog.get_logger("app.api")

# A stream frees its slot when its client leaves; a refused client may try again soon.
RETRY_AFTER_SECONDS = 5


class TooManyStreams(Exception):
    """This client holds as many event streams as it may: 429."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This client already holds {limit} open event streams (MAX_STREAMS_PER_CLIENT); "
            "close one first."
        )
        self.retry_after = RETRY_AFTER_SECONDS


class StreamSlots:
    """The event streams each client holds open."""

    def __init__(self, per_client: int) -> None:
        self.per_client = per_client
        self._open: Counter[str] = Counter()

    def take(self, client: str) -> Callable[[], None]:
        """A slot for `client`, and the function that frees it (once)."""
        if self._open[client] >= self.per_client:
            raise TooManyStreams(self.per_client)
        self._open[client] += 1
        freed = False

        def free() -> None:
            nonlocal freed
            if not freed:
                freed = True
                self._open[client] -= 1
                if not self._open[client]:
                    del self._open[client]

        return free

    def held(self, client: str) -> int:
        return self._open[client]


class RunEventsResponse(EventSourceResponse):
    """A run's stream that frees its client's slot however it ends, and drops a reader that
    read nothing for SSE_SEND_TIMEOUT_SECONDS with an info line (not a failed request)."""

    def __init__(self, *args: object, run_id: str, free: Callable[[], None], **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.run_id = run_id
        self.free = free

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            # The response has started: nothing more can be said to the client, and the
            # server closes the connection.
            log.info("stream.dropped", run_id=self.run_id, reason="the client stopped reading")
        finally:
            self.free()
