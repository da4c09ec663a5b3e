"""How a run's engine state is kept: each message, each step and each tool output once.

The engine hands over its whole state (`RunState.to_json()`) at every checkpoint; storing it
whole would rewrite the conversation and every step each time, so a turn would cost more the
longer the run. The store keeps instead:

- in `runs.state`, the state without its messages (`message_count` says how many there are)
  and with its last step only: the engine changes no other, so each earlier step is a
  `run_steps` row, added once;
- in `run_messages`, the run's own messages, one row each, added once; a tool message whose
  content its call's `tool_call.completed` event holds already names that event
  (`content_event`) instead;
- a call's output once: a closed step's call points at its tool message (`output_at`, that
  message's place), an open step's at the event that carried it (`output_event`);
  `output_events` remembers those events from one checkpoint to the next, until the step closes;
- the history a session gave the run is not copied: `history_through` is the last session
  message it holds, and the session's messages are read up to it, from the place of its first
  (`history_from`: a run whose model may see only the newest holds only those; a run stored
  before this layout holds its history as rows of its own, read first).

`stored_form` splits a state for a write, walking only the steps the write may change;
`expand` gives runs read from the store their whole state back, in one query each for the
runs' messages, steps and the events holding outputs, and one per session. A `Run` outside
the store always carries its whole state; only its row holds the stored form.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.store.models import Run, RunMessage, RunStep, SessionMessage, StoredEvent

_RUN_MESSAGES = cast(Table, RunMessage.__table__)
_RUN_STEPS = cast(Table, RunStep.__table__)

Outputs = dict[tuple[int, Any], tuple[int, Any]]
"""(step, call id) -> (the event that carried the call's output, that output)."""


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message no earlier write stored, as its row holds it."""

    position: int
    message: dict[str, Any]  # its content null when `content_event` holds it
    content_event: int | None = None


@dataclass(frozen=True, slots=True)
class StoredState:
    """A state split for a write: the row's part, the messages and steps no earlier write
    stored, which of the write's `message` events carry one of its messages (the event's index
    -> the message's place), and the whole state as the run carries it afterwards."""

    compact: dict[str, Any]
    new_messages: list[NewMessage]
    new_steps: list[tuple[int, dict[str, Any]]]  # (position, step)
    message_events: dict[int, int]
    carried: dict[str, Any]


def stored_form(
    state: dict[str, Any],
    stored: dict[str, Any] | None,
    history_through: int | None,
    events: Sequence[tuple[str, dict[str, Any]]] = (),
    first_seq: int = 1,
) -> StoredState:
    """Split `state` for a write on top of `stored` (the whole state of the last write, None
    before the first) that also stores `events`, numbered from `first_seq`."""
    messages: list[dict[str, Any]] = state["messages"]
    history = state.get("history_length", 0)
    already = len(stored["messages"]) if stored is not None else history
    steps: list[dict[str, Any]] = state.get("steps", [])
    # The last write's steps are rows but its last one.
    rowed = max(len(stored.get("steps", [])) - 1, 0) if stored is not None else 0
    if already > len(messages) or rowed > max(len(steps) - 1, 0):
        raise ValueError("a run's messages and steps are only ever added to")
    outputs = _output_events(state, stored, events, first_seq, rowed)
    referenced, held = _outputs_referenced(state, rowed, history, outputs)
    compact = {key: value for key, value in state.items() if key != "messages"}
    compact["message_count"] = len(messages)
    compact["steps"] = referenced[-1:]
    through = history_through if stored is None else stored.get("history_through")
    carried = state
    extra: dict[str, Any] = {}
    if through is not None:
        extra["history_through"] = through
    last = len(steps) - 1
    open_outputs = {call_id: seq for (step, call_id), (seq, _) in outputs.items() if step == last}
    if state.get("open_step") and open_outputs:
        extra["output_events"] = open_outputs
    if extra:
        compact |= extra
        carried = {**state, **extra}
    new = [
        _new_message(position, messages[position], held.get(position))
        for position in range(already, len(messages))
    ]
    new_steps = [(rowed + i, step) for i, step in enumerate(referenced[:-1])]
    places = _message_places(events, messages, already)
    return StoredState(compact, new, new_steps, places, carried)


def _output_events(
    state: dict[str, Any],
    stored: dict[str, Any] | None,
    events: Sequence[tuple[str, dict[str, Any]]],
    first_seq: int,
    rowed: int,
) -> Outputs:
    """Which events hold the outputs of the calls of the steps this write may change: each
    `tool_call.completed` of this write whose output its call still has, and those the last
    write remembered, while the call's output stayed the same."""
    steps: list[dict[str, Any]] = state.get("steps", [])
    current = {
        (index, call.get("call_id")): call.get("output")
        for index in range(rowed, len(steps))
        for call in steps[index].get("tool_calls", [])
    }
    found: Outputs = {}
    if stored is not None and stored.get("steps"):
        last = len(stored["steps"]) - 1
        last_calls = stored["steps"][-1].get("tool_calls", [])
        before = {call.get("call_id"): call.get("output") for call in last_calls}
        for call_id, seq in (stored.get("output_events") or {}).items():
            output = current.get((last, call_id))
            if output is not None and output == before.get(call_id):
                found[(last, call_id)] = (seq, output)
    for offset, (name, data) in enumerate(events):
        if name != "tool_call.completed" or data.get("output") is None:
            continue
        call_id = data.get("call_id")
        # The call it names: the latest step with that id (ids are unique within a turn).
        key = next(
            ((i, call_id) for i in reversed(range(rowed, len(steps))) if (i, call_id) in current),
            None,
        )
        if key is not None and current[key] == data["output"]:
            found[key] = (first_seq + offset, data["output"])
    return found


def _outputs_referenced(
    state: dict[str, Any], rowed: int, history: int, outputs: Outputs
) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The steps from `rowed` on, each call's output replaced by where it is kept, and the
    tool messages whose content an event holds (place -> event).

    A closed step's tool messages follow its model answer in call order, and the steps follow
    each other: walking back from the last message finds each step's without taking a call id
    a model used in two turns for the other, and reads only the last steps' messages."""
    messages: list[dict[str, Any]] = state["messages"]
    steps: list[dict[str, Any]] = state.get("steps", [])
    open_index = len(steps) - 1 if state.get("open_step") else None
    cursor = len(messages)
    held: dict[int, int] = {}
    referenced: list[dict[str, Any]] = []
    for index in reversed(range(rowed, len(steps))):
        calls = []
        for call in reversed(steps[index].get("tool_calls", [])):
            found = outputs.get((index, call.get("call_id")))
            if index == open_index:
                if found is not None:
                    call = _renamed(call, "output", "output_event", found[0])
                calls.append(call)
                continue
            position = _tool_message(messages, cursor, history, call.get("call_id"))
            if position is not None:
                cursor = position
                content = messages[position].get("content")
                if found is not None and content == found[1]:
                    held[position] = found[0]
                if call.get("output") is not None and content == call["output"]:
                    call = _renamed(call, "output", "output_at", position)
            calls.append(call)
        calls.reverse()
        referenced.append({**steps[index], "tool_calls": calls})
    referenced.reverse()
    return referenced, held


def _tool_message(
    messages: list[dict[str, Any]], before: int, floor: int, call_id: Any
) -> int | None:
    for position in range(before - 1, floor - 1, -1):
        message = messages[position]
        if message.get("role") == "tool" and message.get("tool_call_id") == call_id:
            return position
    return None


def _new_message(position: int, message: dict[str, Any], event: int | None) -> NewMessage:
    if event is None:
        return NewMessage(position, message)
    return NewMessage(position, {**message, "content": None}, event)


def _message_places(
    events: Sequence[tuple[str, dict[str, Any]]], messages: list[dict[str, Any]], already: int
) -> dict[int, int]:
    """The write's `message` events that carry one of its new messages, in order: their
    message need not be stored twice."""
    places: dict[int, int] = {}
    cursor = already
    for index, (name, data) in enumerate(events):
        if name != "message" or len(data) != 1 or "message" not in data:
            continue
        position = next(
            (p for p in range(cursor, len(messages)) if messages[p] == data["message"]), None
        )
        if position is not None:
            places[index] = position
            cursor = position + 1
    return places


def _renamed(values: dict[str, Any], old: str, new: str, value: Any) -> dict[str, Any]:
    """`values` with `old` replaced by `new` in its place (the key order is kept)."""
    return {(new if key == old else key): (value if key == old else v) for key, v in values.items()}


async def write_rows(
    session: AsyncSession,
    run_id: str,
    messages: Sequence[NewMessage],
    steps: Sequence[tuple[int, dict[str, Any]]],
) -> None:
    if messages:
        rows = [
            {
                "run_id": run_id,
                "position": m.position,
                "message": m.message,
                "content_event": m.content_event,
            }
            for m in messages
        ]
        await session.execute(insert(_RUN_MESSAGES), rows)
    if steps:
        step_rows = [{"run_id": run_id, "position": p, "step": step} for p, step in steps]
        await session.execute(insert(_RUN_STEPS), step_rows)


async def history_through(session: AsyncSession, run: Run, first: int, length: int) -> int | None:
    """The last of the `length` messages of the run's session from place `first` on: the
    history it was given."""
    if run.session_id is None or length == 0:
        return None
    query = select(func.max(SessionMessage.id)).where(
        SessionMessage.tenant == run.tenant,
        SessionMessage.session_id == run.session_id,
        SessionMessage.position < first + length,
    )
    found: int | None = await session.scalar(query)
    return found


async def expand(session: AsyncSession, runs: Sequence[Run]) -> None:
    """Give each run read from the store its whole state, as the engine wrote it."""
    compact = [run for run in runs if run.state is not None and "messages" not in run.state]
    if not compact:
        return
    ids = [run.id for run in compact]
    rows = await session.execute(
        select(RunMessage.run_id, RunMessage.position, RunMessage.message, RunMessage.content_event)
        .where(RunMessage.run_id.in_(ids))
        .order_by(RunMessage.run_id, RunMessage.position)
    )
    stored_messages = [(r[0], r[1], r[2], r[3]) for r in rows.all()]
    step_rows = await session.execute(
        select(RunStep.run_id, RunStep.step)
        .where(RunStep.run_id.in_(ids))
        .order_by(RunStep.run_id, RunStep.position)
    )
    earlier: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run_id, step in step_rows.all():
        earlier[run_id].append(step)
    holding = {r[0] for r in stored_messages if r[3] is not None}
    holding |= {run.id for run in compact if _output_events_of(cast(dict[str, Any], run.state))}
    held = await held_outputs(session, holding)
    own: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for run_id, position, message, event in stored_messages:
        own[run_id][position] = restored_message(message, event, held.get(run_id, {}))
    histories = await _histories(session, compact, own)
    for run in compact:
        state = cast(dict[str, Any], run.state)
        history = histories.get((run.tenant, run.session_id or ""), [])
        whole = _whole(state, own[run.id], earlier[run.id], held.get(run.id, {}), history)
        set_committed_value(run, "state", whole)


def whole_of_own_rows(
    state: dict[str, Any],
    messages: Iterable[tuple[int, dict[str, Any], int | None]],
    earlier_steps: list[dict[str, Any]],
    held: dict[int, Any],
) -> dict[str, Any]:
    """`expand` for a run of no session, given its rows as read: its messages (position,
    message, the event holding its content), its steps but the last, and the outputs its
    `tool_call.completed` events hold (event id -> output)."""
    own = {
        position: restored_message(message, event, held) for position, message, event in messages
    }
    return _whole(state, own, earlier_steps, held, [])


def _output_events_of(state: dict[str, Any]) -> list[int]:
    return [
        call["output_event"]
        for step in state.get("steps", [])
        for call in step.get("tool_calls", [])
        if "output_event" in call
    ]


async def held_outputs(
    session: AsyncSession, run_ids: Iterable[str], seqs: Collection[int] | None = None
) -> dict[str, dict[int, Any]]:
    """The outputs the runs' `tool_call.completed` events carry (only events `seqs` if given):
    run -> event id -> output."""
    ids = list(run_ids)
    if not ids or (seqs is not None and not seqs):
        return {}
    query = select(StoredEvent.run_id, StoredEvent.seq, StoredEvent.data).where(
        StoredEvent.run_id.in_(ids), StoredEvent.name == "tool_call.completed"
    )
    if seqs is not None:
        query = query.where(StoredEvent.seq.in_(seqs))
    found: dict[str, dict[int, Any]] = defaultdict(dict)
    for run_id, seq, data in (await session.execute(query)).all():
        found[run_id][seq] = data.get("output")
    return found


def restored_message(
    message: dict[str, Any], content_event: int | None, held: dict[int, Any]
) -> dict[str, Any]:
    """A message as its row holds it, its content back from the event holding it."""
    if content_event is None:
        return message
    return {**message, "content": held.get(content_event)}


async def _histories(
    session: AsyncSession, runs: Sequence[Run], own: dict[str, dict[int, dict[str, Any]]]
) -> dict[tuple[str, str], list[tuple[int, int, dict[str, Any]]]]:
    """For each session (tenant, id) some run refers to: its messages as far as any of those
    runs needs, from the first any of them holds, as (position, id, message)."""
    needed: dict[tuple[str, str], tuple[int, int, int]] = {}
    for run in runs:
        state = cast(dict[str, Any], run.state)
        length, through = state.get("history_length", 0), state.get("history_through")
        if length == 0 or through is None or run.session_id is None:
            continue
        first = state.get("history_from", 0)
        key = (run.tenant, run.session_id)
        known = needed.get(key, (first, 0, 0))
        needed[key] = (min(known[0], first), max(known[1], first + length), max(known[2], through))
    found: dict[tuple[str, str], list[tuple[int, int, dict[str, Any]]]] = {}
    for (tenant, session_id), (first, end, through) in needed.items():
        result = await session.execute(
            select(SessionMessage.position, SessionMessage.id, SessionMessage.message)
            .where(
                SessionMessage.tenant == tenant,
                SessionMessage.session_id == session_id,
                SessionMessage.position >= first,
                SessionMessage.position < end,
                SessionMessage.id <= through,
            )
            .order_by(SessionMessage.position)
        )
        found[tenant, session_id] = [(row[0], row[1], row[2]) for row in result.all()]
    return found


def _whole(
    state: dict[str, Any],
    own: dict[int, dict[str, Any]],
    earlier: list[dict[str, Any]],
    held: dict[int, Any],
    history_rows: list[tuple[int, int, dict[str, Any]]],
) -> dict[str, Any]:
    length = state.get("history_length", 0)
    if all(position in own for position in range(length)):
        history = [own[position] for position in range(length)]
    else:
        through = state.get("history_through") or 0
        first = state.get("history_from", 0)
        # A forgotten session leaves the run its own messages only.
        history = [
            m
            for position, id_, m in history_rows
            if first <= position < first + length and id_ <= through
        ]
    steps = []
    for step in [*earlier, *state.get("steps", [])]:
        calls = []
        for call in step.get("tool_calls", []):
            if "output_at" in call:
                output = own.get(call["output_at"], {}).get("content")
                call = _renamed(call, "output_at", "output", output)
            elif "output_event" in call:
                call = _renamed(call, "output_event", "output", held.get(call["output_event"]))
            calls.append(call)
        steps.append({**step, "tool_calls": calls})
    restored = {key: value for key, value in state.items() if key != "message_count"}
    restored["messages"] = [*history, *(own[p] for p in sorted(own) if p >= length)]
    restored["history_length"] = len(history)
    restored["steps"] = steps
    return restored
