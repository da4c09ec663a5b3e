"""Loading the user's agents module and building the engine from settings."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from app.engine import Agent, Engine, ModelProvider, ModelRouter
from app.engine.instruments import Instruments
from app.observability.metrics import PrometheusInstruments
from app.observability.tracing import CombinedInstruments, TracingInstruments, configure_tracing
from app.runtime.providers import build_providers
from app.settings import Settings


class AgentsModuleError(RuntimeError):
    """The agents module could not be loaded or does not define `agents`."""


@dataclass(frozen=True)
class AgentsModule:
    agents: list[Agent]
    providers: Mapping[str, ModelProvider] = field(default_factory=dict)


def load_agents_module(path: str) -> AgentsModule:
    """Import `path`; its list `agents` is required, its dict `providers` optional."""
    try:
        module = importlib.import_module(path)
    except ImportError as exc:
        raise AgentsModuleError(f"cannot import AGENTS_MODULE {path!r}: {exc}") from exc
    agents = getattr(module, "agents", None)
    if not isinstance(agents, list | tuple) or not all(isinstance(a, Agent) for a in agents):
        raise AgentsModuleError(f"{path}.agents must be a list of app.Agent")
    providers = getattr(module, "providers", None) or {}
    if not isinstance(providers, Mapping) or not all(
        isinstance(p, ModelProvider) for p in providers.values()
    ):
        raise AgentsModuleError(f"{path}.providers must map names to app.ModelProvider objects")
    return AgentsModule(list(agents), dict(providers))


def build_engine(settings: Settings, module: AgentsModule) -> Engine:
    """The engine over the module's agents, with providers from settings and from the module."""
    default, providers = build_providers(settings)
    providers.update(module.providers)
    router = ModelRouter(default, providers, default_model=settings.default_model)
    instruments: Instruments = PrometheusInstruments()
    if settings.tracing:
        configure_tracing()
        instruments = CombinedInstruments(instruments, TracingInstruments())
    return Engine(
        module.agents,
        router,
        instruments=instruments,
        max_tool_output_bytes=settings.max_tool_output_bytes,
    )
