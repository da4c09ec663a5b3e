"""Event streams as HTTP responses: each event encoded once (a delta once for all its
watchers), at most MAX_STREAMS_PER_CLIENT open per client, and a reader too slow to keep up
dropped with one log line."""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import structlog
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from app.services.streams import StreamItem

log = structlog.get_logger("app.api")

# A stream frees its slot when its client leaves; a refused client may try again soon.
RETRY_AFTER_SECONDS = 5


class Frames:
    """Events as server-sent bytes. A delta is encoded once for all the watchers of its run:
    the hub hands each of them the same data, so the last few are remembered by identity (and
    held, so no other object takes their id while they are)."""

    def __init__(self, remembered: int = 256) -> None:
        self._remembered = remembered
        self._deltas: OrderedDict[int, tuple[dict[str, Any], bytes]] = OrderedDict()

    def frame(self, item: StreamItem) -> bytes:
        if item.id is not None:
            return encode(item)  # a stored event: each reader reads its own from the store
        known = self._deltas.get(id(item.data))
        if known is not None and known[0] is item.data:
            return known[1]
        encoded = encode(item)
        self._deltas[id(item.data)] = (item.data, encoded)
        if len(self._deltas) > self._remembered:
            self._deltas.popitem(last=False)
        return encoded


def encode(item: StreamItem) -> bytes:
    data = item.data
    if item.stored_at is not None:
        # Beside the event's own fields, so a client can show when each thing happened
        # (how long a person took to decide, say) without another call.
        data = {**data, "stored_at": item.stored_at.isoformat().replace("+00:00", "Z")}
    event_id = str(item.id) if item.id is not None else None
    return ServerSentEvent(
        json.dumps(data, separators=(",", ":")), event=item.event, id=event_id
    ).encode()


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
