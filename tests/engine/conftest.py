"""Engine fixtures: an engine factory wired to the fake model, and a recording observer."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import anyio
import pytest

from app.engine import Agent, Engine, ModelProvider, ModelRouter, OpenAIProvider
from app.engine.events import RunEvent, TextDelta
from app.engine.state import RunState
from app.testing import FakeModelServer

EngineFactory = Callable[..., Engine]


class Recorder:
    """An observer that keeps every delta and checkpoint, the state copied through JSON."""

    def __init__(self) -> None:
        self.deltas: list[TextDelta] = []
        self.checkpoints: list[tuple[dict[str, Any], list[RunEvent]]] = []
        # Set once a call of the named tool has completed: a concurrent tool can wait for it.
        self.completed: defaultdict[str, anyio.Event] = defaultdict(anyio.Event)

    async def on_delta(self, delta: TextDelta) -> None:
        self.deltas.append(delta)

    async def checkpoint(self, state: RunState, events: list[RunEvent]) -> None:
        self.checkpoints.append((json.loads(json.dumps(state.to_json())), list(events)))
        for event in events:
            if event.name == "tool_call.completed":
                self.completed[event.data["name"]].set()

    @property
    def events(self) -> list[RunEvent]:
        return [event for _, batch in self.checkpoints for event in batch]


@pytest.fixture
async def provider(fake_server: FakeModelServer) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(base_url=fake_server.base_url, max_retries=2, timeout_seconds=10)
    yield provider
    await provider.aclose()


@pytest.fixture
def make_engine(provider: ModelProvider) -> EngineFactory:
    def make(
        agents: Iterable[Agent], providers: Mapping[str, ModelProvider] | None = None
    ) -> Engine:
        return Engine(agents, ModelRouter(provider, providers))

    return make


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
