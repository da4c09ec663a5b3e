"""How a run's engine state is kept: the conversation apart from the rest, each message once.

The engine hands over its whole state (`RunState.to_json()`) at every checkpoint; storing it
whole would rewrite the conversation each time, so a turn would cost more the longer the run.
The store keeps instead:

- in `runs.state`, the state without its messages (`message_count` says how many there are),
  and without the output of a closed step's call, which its tool message holds already
  (`output_at`: that message's place);
- in `run_messages`, the run's own messages, one row each, added once;
- the history a session gave the run is not copied: `history_through` is the last session
  message it holds, and the session's messages are read up to it (a run stored before this
  layout holds its history as rows of its own, read first).

`stored_form` splits a state for a write; `expand` gives runs read from the store their whole
state back, in one query for the runs' messages and one per session. A `Run` outside the store
always carries its whole state; only its row holds the stored form.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.store.models import Run, RunMessage, SessionMessage

_RUN_MESSAGES = cast(Table, RunMessage.__table__)


@dataclass(frozen=True, slots=True)
class StoredState:
    """A state split for a write: the row's part, the messages no earlier write stored, and
    the whole state as the run carries it afterwards."""

    compact: dict[str, Any]
    new_messages: list[tuple[int, dict[str, Any]]]  # (position, message)
    carried: dict[str, Any]


def stored_form(
    state: dict[str, Any], stored: dict[str, Any] | None, history_through: int | None
) -> StoredState:
    """Split `state` for a write on top of `stored` (the whole state of the last write, None
    before the first)."""
    messages: list[dict[str, Any]] = state["messages"]
    history = state.get("history_length", 0)
    already = len(stored["messages"]) if stored is not None else history
    if already > len(messages):
        raise ValueError("a run's messages are only ever added to")
    compact = {key: value for key, value in state.items() if key != "messages"}
    compact["message_count"] = len(messages)
    through = history_through if stored is None else stored.get("history_through")
    carried = state
    if through is not None:
        compact["history_through"] = through
        carried = {**state, "history_through": through}
    compact["steps"] = _outputs_referenced(state, messages, history)
    new = [(position, messages[position]) for position in range(already, len(messages))]
    return StoredState(compact, new, carried)


def _outputs_referenced(
    state: dict[str, Any], messages: list[dict[str, Any]], history: int
) -> list[dict[str, Any]]:
    """The steps, each closed step's call output replaced by the place of its tool message.

    A closed step's tool messages follow in call order; they are found walking the run's own
    messages once, so an id a model used in two turns is never taken for the other."""
    steps: list[dict[str, Any]] = state.get("steps", [])
    closed = steps[:-1] if state.get("open_step") else steps
    cursor = history
    referenced = []
    for step in closed:
        calls = []
        for call in step.get("tool_calls", []):
            position = _tool_message(messages, cursor, call.get("call_id"))
            output = call.get("output")
            if (
                position is not None
                and output is not None
                and messages[position].get("content") == output
            ):
                call = {key: value for key, value in call.items() if key != "output"}
                call["output_at"] = position
                cursor = position + 1
            calls.append(call)
        referenced.append({**step, "tool_calls": calls})
    return referenced + steps[len(closed) :]


def _tool_message(messages: list[dict[str, Any]], start: int, call_id: Any) -> int | None:
    for position in range(start, len(messages)):
        message = messages[position]
        if message.get("role") == "tool" and message.get("tool_call_id") == call_id:
            return position
    return None


async def write_messages(
    session: AsyncSession, run_id: str, messages: Sequence[tuple[int, dict[str, Any]]]
) -> None:
    if messages:
        rows = [{"run_id": run_id, "position": p, "message": m} for p, m in messages]
        await session.execute(insert(_RUN_MESSAGES), rows)


async def history_through(session: AsyncSession, session_id: str | None, length: int) -> int | None:
    """The last of a session's first `length` messages: the history a new run was given."""
    if session_id is None or length == 0:
        return None
    query = select(func.max(SessionMessage.id)).where(
        SessionMessage.session_id == session_id, SessionMessage.position < length
    )
    found: int | None = await session.scalar(query)
    return found


async def expand(session: AsyncSession, runs: Sequence[Run]) -> None:
    """Give each run read from the store its whole state, as the engine wrote it."""
    compact = [run for run in runs if run.state is not None and "messages" not in run.state]
    if not compact:
        return
    own: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    result = await session.execute(
        select(RunMessage.run_id, RunMessage.position, RunMessage.message)
        .where(RunMessage.run_id.in_([run.id for run in compact]))
        .order_by(RunMessage.run_id, RunMessage.position)
    )
    for run_id, position, message in result.all():
        own[run_id][position] = message
    histories = await _histories(session, compact, own)
    for run in compact:
        state = cast(dict[str, Any], run.state)
        set_committed_value(run, "state", _whole(state, own[run.id], histories))


async def _histories(
    session: AsyncSession, runs: Sequence[Run], own: dict[str, dict[int, dict[str, Any]]]
) -> dict[str, list[tuple[int, int, dict[str, Any]]]]:
    """For each session some run refers to: its messages as far as any of those runs needs,
    as (position, id, message)."""
    needed: dict[str, tuple[int, int]] = {}
    for run in runs:
        state = cast(dict[str, Any], run.state)
        length, through = state.get("history_length", 0), state.get("history_through")
        if length == 0 or through is None or run.session_id is None:
            continue
        known = needed.get(run.session_id, (0, 0))
        needed[run.session_id] = (max(known[0], length), max(known[1], through))
    found: dict[str, list[tuple[int, int, dict[str, Any]]]] = {}
    for session_id, (length, through) in needed.items():
        result = await session.execute(
            select(SessionMessage.position, SessionMessage.id, SessionMessage.message)
            .where(
                SessionMessage.session_id == session_id,
                SessionMessage.position < length,
                SessionMessage.id <= through,
            )
            .order_by(SessionMessage.position)
        )
        found[session_id] = [(row[0], row[1], row[2]) for row in result.all()]
    return found


def _whole(
    state: dict[str, Any],
    own: dict[int, dict[str, Any]],
    histories: dict[str, list[tuple[int, int, dict[str, Any]]]],
) -> dict[str, Any]:
    length = state.get("history_length", 0)
    if all(position in own for position in range(length)):
        history = [own[position] for position in range(length)]
    else:
        through = state.get("history_through") or 0
        rows = histories.get(state.get("session_id") or "", [])
        # A forgotten session leaves the run its own messages only.
        history = [m for position, id_, m in rows if position < length and id_ <= through]
    steps = []
    for step in state.get("steps", []):
        calls = []
        for call in step.get("tool_calls", []):
            if "output_at" in call:
                message = own.get(call["output_at"], {})
                call = {key: value for key, value in call.items() if key != "output_at"}
                call["output"] = message.get("content")
            calls.append(call)
        steps.append({**step, "tool_calls": calls})
    restored = {key: value for key, value in state.items() if key != "message_count"}
    restored["messages"] = [*history, *(own[p] for p in sorted(own) if p >= length)]
    restored["history_length"] = len(history)
    restored["steps"] = steps
    return restored
