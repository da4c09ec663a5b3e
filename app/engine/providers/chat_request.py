"""The Chat Completions request body, less the fields a server refuses."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Literal, get_args

from app.engine.model import ModelRequest
from app.engine.providers.fields import outgoing_messages, sent_back

OptionalField = Literal[
    "stream_options", "parallel_tool_calls", "temperature", "max_tokens", "response_format"
]
OPTIONAL_FIELDS: frozenset[str] = frozenset(get_args(OptionalField))

# Left out and asked again when a server's 400 names them: none changes what the run takes as
# an answer (without `stream_options` some servers send no usage; the engine runs a sequential
# agent's calls one at a time whatever the model asks; a structured answer is validated by the
# engine either way, and one that fails is sent back with the schema). A refused temperature
# or max_tokens would.
DROPPABLE_FIELDS = ("stream_options", "parallel_tool_calls", "response_format")


def request_body(request: ModelRequest, omit: Collection[str] = ()) -> dict[str, Any]:
    """The streamed request for `request`, without the optional fields, or the fields sent back
    on messages (`fields.outgoing_messages`), named in `omit`."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": outgoing_messages(request.messages, request.model, omit),
        "stream": True,
    }
    optional: dict[str, Any] = {"stream_options": {"include_usage": True}}
    if request.tools:
        body["tools"] = request.tools
        if request.parallel_tool_calls is False:
            optional["parallel_tool_calls"] = False
    if request.temperature is not None:
        optional["temperature"] = request.temperature
    if request.max_tokens is not None:
        optional["max_tokens"] = request.max_tokens
    if request.response_format is not None:
        optional["response_format"] = request.response_format
    body.update((name, value) for name, value in optional.items() if name not in omit)
    return body


def refused_field(
    status: int,
    server_text: str,
    request: ModelRequest,
    body: dict[str, Any],
    omit: Collection[str],
) -> str | None:
    """The field a 400 or 422 names, when the request can do without it: a droppable field the
    body holds, or a field the server left on a message and gets back (not yet in `omit`)."""
    if status not in (400, 422):
        return None
    sent = sorted(sent_back(request.messages, request.model) - set(omit))
    candidates = [*(name for name in DROPPABLE_FIELDS if name in body), *sent]
    # As a word: `reasoning` is not named by "reasoning_content is unsupported".
    return next(
        (n for n in candidates if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", server_text)), None
    )
