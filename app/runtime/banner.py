"""What `serve` says at start: the agents, where their models are, the database, the URLs.

Readable lines on a terminal; one JSON line otherwise (a process manager's log). Never a key:
only whether one is set.
"""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Any, TextIO

from app.engine import Agent
from app.runtime.agents import AgentsModule
from app.runtime.providers import endpoints, uses_demo_model
from app.settings import Settings
from app.store.database import normalize_url

DEMO_NOTE = (
    "No model is configured (OPENAI_API_KEY, OPENAI_BASE_URL, MODEL_PROVIDERS): the example "
    "agents play on the demo model, which reads the conversation but is no LLM. Set one of "
    "those to use a real model."
)


def facts(settings: Settings, module: AgentsModule, *, executor: bool) -> dict[str, Any]:
    base = f"http://{_host(settings.host)}:{settings.port}"
    return {
        "agents": sorted({agent.name for agent in _reachable(module)}),
        "agents_module": settings.agents_module,
        "models": [
            {"provider": name, "endpoint": where, "key_set": key_set}
            for name, where, key_set in endpoints(settings, demo=module.bundled)
        ],
        "demo_model": uses_demo_model(settings, module.bundled),
        "database": normalize_url(settings.database_url).render_as_string(hide_password=True),
        "executor": executor,
        "api": base,
        "console": f"{base}/console" if settings.console else None,
        "docs": f"{base}/docs",
    }


def show(facts: dict[str, Any], out: TextIO = sys.stdout) -> None:
    if not out.isatty():
        out.write(json.dumps({"event": "serve.starting", **facts}) + "\n")
        out.flush()
        return
    lines = [f"agent-runs on {facts['api']}"]
    lines.append(f"  agents    {', '.join(facts['agents'])}  ({facts['agents_module']})")
    for model in facts["models"]:
        key = "needs no key" if facts["demo_model"] else "key set" if model["key_set"] else "no key"
        lines.append(f"  model     {model['provider']}: {model['endpoint']}, {key}")
    lines.append(f"  database  {facts['database']}")
    lines.append(f"  executor  {'embedded' if facts['executor'] else 'none (workers run runs)'}")
    if facts["console"]:
        lines.append(f"  console   {facts['console']}")
    lines.append(f"  docs      {facts['docs']}")
    if facts["demo_model"]:
        lines.append("")
        lines.extend(f"  {line}" for line in textwrap.wrap(DEMO_NOTE, 90))
    out.write("\n".join(lines) + "\n\n")
    out.flush()


def _reachable(module: AgentsModule) -> list[Agent]:
    found: list[Agent] = []
    pending = list(module.agents)
    while pending:
        agent = pending.pop()
        if all(agent is not known for known in found):
            found.append(agent)
            pending.extend(agent.handoffs)
    return found


def _host(host: str) -> str:
    # An address that listens everywhere is reached, from this machine, at the loopback.
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
