"""Which of a session's messages a run's model sees when `max_history_messages` bounds them."""

from __future__ import annotations

from collections.abc import Sequence

from app.engine.state import Message


def history_window(history: Sequence[Message], limit: int | None) -> int:
    """Where the history the model gets starts: the longest suffix of `history` at most `limit`
    long (all of it when None) that holds no tool result without the assistant message that
    asked for it.

    A tool result follows the answer that asked for it, with its siblings, so a cut inside a
    turn leaves only tool results at the window's head: moving the start past them is enough,
    and keeps every call of an assistant message the window holds with its result (those
    follow it)."""
    start = 0 if limit is None else max(len(history) - limit, 0)
    while start < len(history) and history[start].get("role") == "tool":
        start += 1
    return start
