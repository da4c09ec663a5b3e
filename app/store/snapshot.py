"""The engine's state as JSON for a checkpoint, at a cost that does not grow with the run.

`RunState.to_json()` copies the whole conversation and every step at each checkpoint (three
or more a turn). Most of it the last checkpoint's JSON holds already: the messages are JSON
as the engine keeps them and are only ever added to, and the engine changes only its last
step, so only the rest of the state and the steps from the last one on are dumped again.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from pydantic import TypeAdapter

from app.engine.state import RunState, StepRecord

_STATE = TypeAdapter(RunState)
_STEP = TypeAdapter(StepRecord)
_FIELDS = [field.name for field in fields(RunState)]
_REUSED = {"messages", "steps"}


def state_json(state: RunState, last: dict[str, Any] | None) -> dict[str, Any]:
    """What `state.to_json()` gives, reusing `last`: the whole state the run's last checkpoint
    stored (None: dump it all)."""
    if last is None:
        return state.to_json()
    rest: dict[str, Any] = _STATE.dump_python(state, mode="json", exclude=_REUSED)
    kept: list[dict[str, Any]] = last.get("steps", [])
    unchanged = max(len(kept) - 1, 0) if len(kept) <= len(state.steps) else 0
    rest["steps"] = [
        *kept[:unchanged],
        *(_STEP.dump_python(step, mode="json") for step in state.steps[unchanged:]),
    ]
    # A copy of the list, not of the messages: the engine appends to its own.
    rest["messages"] = list(state.messages)
    return {name: rest[name] for name in _FIELDS}
