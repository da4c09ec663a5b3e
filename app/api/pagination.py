"""Opaque cursors: what a page needs to continue, base64url-encoded JSON."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from app.api.errors import ApiError
from app.api.schemas import ProblemError


class _Sequenced(Protocol):
    @property
    def seq(self) -> int: ...


T = TypeVar("T", bound=_Sequenced)


def encode(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Far above any cursor this service gives out: a longer one is forged, and not worth parsing.
MAX_CURSOR_LENGTH = 512


def decode(cursor: str | None, key: str, kind: type) -> Any:
    """The position a cursor holds under `key`, or None without a cursor; 422 when forged."""
    if cursor is None:
        return None
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded))[key]
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        value = None
    out_of_range = isinstance(value, int) and not 0 <= value < 2**63
    if not isinstance(value, kind) or isinstance(value, bool) or out_of_range:
        error = ProblemError(loc=["query", "cursor"], msg="not a cursor this list gave out")
        raise ApiError(422, "The cursor is not valid for this list.", [error])
    return value


def by_seq(found: Sequence[T], limit: int) -> tuple[Sequence[T], str | None]:
    """A page of rows fetched newest first with one row more than `limit`, and the cursor
    that continues after it (None on the last page)."""
    if len(found) <= limit:
        return found, None
    return found[:limit], encode({"seq": found[limit - 1].seq})
