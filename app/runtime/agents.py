"""Loading the user's agents module and building the engine from settings."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from app.engine import Agent, Engine, ModelProvider, ModelRouter
from app.engine.instruments import Instruments
from app.engine.mcp import MCPServer
from app.observability.metrics import PrometheusInstruments
from app.observability.tracing import CombinedInstruments, TracingInstruments, configure_tracing
from app.runtime.providers import build_providers
from app.settings import Settings

BUNDLED_AGENTS = "app.examples.agents"


class AgentsModuleError(RuntimeError):
    """The agents module could not be loaded, does not define `agents`, or defines them wrong."""


@dataclass(frozen=True)
class AgentsModule:
    agents: list[Agent]
    providers: Mapping[str, ModelProvider] = field(default_factory=dict)
    bundled: bool = False
    """The example agents shipped in the package: the demo model may play them."""


def load_agents_module(path: str) -> AgentsModule:
    """Import `path` (a dotted module, found in the working directory too, or a `.py` file);
    its list `agents` is required, its dict `providers` optional."""
    try:
        module = _import(path)
    except AgentsModuleError:
        raise
    except Exception as exc:
        raise AgentsModuleError(
            f"AGENTS_MODULE={path!r} cannot be imported: {_where(exc)}"
        ) from exc
    agents = getattr(module, "agents", None)
    if not isinstance(agents, list | tuple) or not all(isinstance(a, Agent) for a in agents):
        raise AgentsModuleError(f"AGENTS_MODULE={path!r}: its `agents` must be a list of app.Agent")
    providers = getattr(module, "providers", None) or {}
    if not isinstance(providers, Mapping) or not all(
        isinstance(p, ModelProvider) for p in providers.values()
    ):
        raise AgentsModuleError(
            f"AGENTS_MODULE={path!r}: its `providers` must map names to app.ModelProvider objects"
        )
    return AgentsModule(list(agents), dict(providers), bundled=module.__name__ == BUNDLED_AGENTS)


def _import(path: str) -> ModuleType:
    if path.endswith(".py"):
        file = Path(path).resolve()
        if not file.is_file():
            raise AgentsModuleError(f"AGENTS_MODULE={path!r}: no such file")
        # Its neighbours import each other as they would when run from their folder.
        _search_first(str(file.parent))
        spec = importlib.util.spec_from_file_location(file.stem, file)
        if spec is None or spec.loader is None:
            raise AgentsModuleError(f"AGENTS_MODULE={path!r}: not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[file.stem] = module  # so pickling, dataclasses and typing find it by name
        spec.loader.exec_module(module)
        return module
    # The console script's path holds its own folder, not the working directory that
    # `python -m` would add: a module next to the user is found as they expect.
    _search_first(os.getcwd())
    return importlib.import_module(path)


def _search_first(folder: str) -> None:
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _where(exc: BaseException) -> str:
    """The error and where in the user's code it was raised (not importlib's frames)."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen")
        and "importlib" not in frame.filename
        and frame.filename != __file__
    ]
    place = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{place}"


def build_engine(settings: Settings, module: AgentsModule) -> Engine:
    """The engine over the module's agents, with providers from settings and from the module."""
    default, providers = build_providers(settings, demo=module.bundled)
    providers.update(module.providers)
    router = ModelRouter(default, providers, default_model=settings.default_model)
    instruments: Instruments = PrometheusInstruments()
    if settings.tracing:
        configure_tracing()
        instruments = CombinedInstruments(instruments, TracingInstruments())
    try:
        return Engine(
            module.agents,
            router,
            instruments=instruments,
            max_tool_output_bytes=settings.max_tool_output_bytes,
            mcp_servers=build_mcp_servers(settings),
        )
    except ValueError as exc:  # two agents or tools of one name, an undefined MCP server
        raise AgentsModuleError(f"AGENTS_MODULE={settings.agents_module!r}: {exc}") from exc


def build_mcp_servers(settings: Settings) -> dict[str, MCPServer]:
    """`MCP_SERVERS`, each an `MCPServer` (not connected yet): an entry's fields are its
    keyword arguments."""
    return {
        name: MCPServer(name, **entry.model_dump()) for name, entry in settings.mcp_servers.items()
    }
