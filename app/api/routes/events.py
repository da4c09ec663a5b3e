"""`/runs/{id}/events`: a run as server-sent events, resumable with `Last-Event-ID`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse

from app.api.deps import CallerDep, ServicesDep, client_of, problems
from app.api.streams import Frames, RunEventsResponse
from app.services.streams import StreamItem

router = APIRouter(tags=["events"])

MAX_EVENT_ID = 2**31 - 1  # event ids are 32-bit integers in the store

STREAM_DESCRIPTION = """Server-sent events: each stored event has an `id` (increasing within
the run), an `event` name and JSON `data`, which also carries `stored_at` (when the event
happened); `message.delta` events (text as the model generates it)
have no id and are never replayed. The stream closes once the run has ended and all is sent."""


SERVER_SENT_EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "The event's id; none on `message.delta`."},
        "event": {"type": "string", "description": "The event's name, as `run.completed`."},
        "data": {"type": "string", "description": "The event's data, JSON."},
        "retry": {"type": "integer", "minimum": 0},
    },
    "required": ["data"],
}


@router.get(
    "/runs/{run_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": STREAM_DESCRIPTION,
            # OpenAPI 3.1 has no schema for a stream's items (3.2's `itemSchema`): the item
            # shape is an extension, and the stream itself has no schema to check it against.
            "content": {"text/event-stream": {"x-itemSchema": SERVER_SENT_EVENT}},
        },
        **problems(404, 422, 429),
    },
)
async def run_events(
    run_id: str,
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
    last_event_id: Annotated[
        int | None, Header(ge=0, le=MAX_EVENT_ID, description="Resume after this event id.")
    ] = None,
    last_event_id_query: Annotated[
        int | None,
        Query(
            alias="last_event_id",
            ge=0,
            le=MAX_EVENT_ID,
            description="The same, for clients without headers.",
        ),
    ] = None,
) -> EventSourceResponse:
    """The run's events: those stored after `Last-Event-ID`, then the live ones."""
    # A client past its streams is refused before anything is read for it.
    free = services.stream_slots.take(client_of(request))
    stream = services.events
    after = last_event_id if last_event_id is not None else (last_event_id_query or 0)
    settings = services.settings
    try:
        tenancy = await stream.check(run_id, caller)
        return RunEventsResponse(
            _sse(stream.events(run_id, tenancy, after), services.frames),
            ping=settings.sse_ping_seconds,
            send_timeout=settings.sse_send_timeout_seconds,
            run_id=run_id,
            free=free,
        )
    except BaseException:
        free()
        raise


async def _sse(batches: AsyncIterator[list[StreamItem]], frames: Frames) -> AsyncIterator[bytes]:
    # One write per batch: a reader that fell behind catches up at the cost of one.
    async for batch in batches:
        yield b"".join(frames.frame(item) for item in batch)
