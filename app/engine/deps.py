"""What a turn needs of the engine, and nothing more: the agents, the models, the instruments
and the limit on a tool's output."""

from __future__ import annotations

from dataclasses import dataclass

from app.engine.instruments import Instruments
from app.engine.providers.router import ModelRouter
from app.engine.registry import AgentRegistry


@dataclass(frozen=True, slots=True)
class TurnDeps:
    agents: AgentRegistry
    models: ModelRouter
    instruments: Instruments
    max_tool_output_bytes: int
