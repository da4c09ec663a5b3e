"""A failed model call told in the server's own words, bounded, naming the model called."""

from __future__ import annotations

import json
from typing import Any

from app.engine.errors import ModelError

MAX_SERVER_TEXT = 1000


def model_error(model: str, status: int | None, body: object, fallback: str) -> ModelError:
    """`model 'x': the server answered 400: <what it said>`, cut at `MAX_SERVER_TEXT`."""
    said = server_message(body) or fallback
    if len(said) > MAX_SERVER_TEXT:
        said = said[:MAX_SERVER_TEXT] + " [...]"
    prefix = f"the server answered {status}: " if status else ""
    return ModelError(f"model {model!r}: {prefix}{said}")


def server_message(body: object) -> str:
    """The message in an error body: OpenAI's `error.message`, FastAPI's `detail`, or the text."""
    if isinstance(body, str):
        return body.strip()
    if not isinstance(body, dict):
        return ""
    error: Any = body.get("error", body)
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        for key in ("message", "detail"):
            value = error.get(key)
            if isinstance(value, str) and value:
                return value
            if value:
                return json.dumps(value)
    return json.dumps(body)
