"""The store's JSON of a checkpoint's state (`app.store.snapshot`) is the engine's own, though
it reuses the last checkpoint's messages and steps: every checkpoint of runs of several turns,
with calls in parallel, a failing tool, and an answer or a model error at the end."""

from __future__ import annotations

from typing import Any

import pytest

from app import Agent
from app.engine import RunConfig
from app.engine.events import RunEvent, TextDelta
from app.engine.state import RunState
from app.store.snapshot import state_json
from app.testing import FakeModel, call, calls, error, text
from tests.engine.conftest import EngineFactory
from tests.engine.test_loop import add, explode

pytestmark = pytest.mark.anyio


class Comparing:
    """An observer that checks each checkpoint's JSON against `to_json()`."""

    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None
        self.checked = 0

    async def on_delta(self, delta: TextDelta) -> None:
        return None

    async def checkpoint(self, state: RunState, events: list[RunEvent]) -> None:
        dumped = state_json(state, self.last)
        whole = state.to_json()
        assert dumped == whole
        assert list(dumped) == list(whole)
        self.last = dumped
        self.checked += 1


@pytest.mark.parametrize("ending", ["answer", "model_error"])
async def test_each_checkpoint_s_json_is_the_engine_s(
    make_engine: EngineFactory, fake: FakeModel, ending: str
) -> None:
    last = text("done") if ending == "answer" else error(400, message="down")
    fake.script(
        "m",
        [
            calls(("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})),
            call("explode", {}),
            call("add", {"a": 5, "b": 6}),
            last,
        ],
    )
    engine = make_engine([Agent(name="calc", model="m", tools=[add, explode])])
    state = engine.start("calc", "go", config=RunConfig(max_turns=10))
    observer = Comparing()

    await engine.run(state, observer)

    assert observer.checked >= 8
    # A failed model call adds no step: its time goes to the last one, closed before.
    assert len(state.steps) == (4 if ending == "answer" else 3)
