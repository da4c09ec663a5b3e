"""Figures, the machine they were measured on, the table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import PEERS, ROOT

PEER_PACKAGES = ("openai-agents", "langgraph", "langgraph-api", "langgraph-cli", "langchain-openai")


@dataclass
class Figure:
    """One measured figure, and the target it is held to (if any)."""

    workload: str
    name: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None  # None: no target, or nothing measured

    def shown(self) -> str:
        if self.value is None:
            return "-"
        whole = abs(self.value) >= 100 or float(self.value).is_integer()
        digits = 0 if whole else 1 if abs(self.value) >= 10 else 2
        return f"{self.value:,.{digits}f} {self.unit}".strip()


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


@dataclass
class Outcome:
    """What a workload measured: its figures, and everything behind them."""

    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _first_line(args: Sequence[str]) -> str | None:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip().splitlines()[0] if result.stdout.strip() else None


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _memory_gib() -> float | None:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return None


def peer_versions() -> dict[str, str]:
    """The peers' versions, as their own project resolved them."""
    code = (
        "import importlib.metadata as m, json; "
        f"print(json.dumps({{p: m.version(p) for p in {list(PEER_PACKAGES)!r}}}))"
    )
    line = _first_line(["uv", "run", "--project", str(PEERS), "python", "-c", code])
    return dict(json.loads(line)) if line else {}


def machine() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "postgresql": _first_line(["pg_config", "--version"]),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "revision": _first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
    }


def header(env: dict[str, Any], peers: dict[str, str]) -> str:
    machine_line = (
        f"{env['cpu']}, {env['cores']} cores, {env['memory_gib']} GiB; Python {env['python']}; "
        f"{env['postgresql']}; load {env['load_average']}"
    )
    peer_line = ", ".join(f"{name} {version}" for name, version in peers.items()) or "-"
    return f"machine: {machine_line}\npeers: {peer_line}"


def table(outcomes: dict[str, Outcome]) -> str:
    rows = [("workload", "figure", "value", "target", "met?")]
    for name, outcome in outcomes.items():
        if outcome.error:
            rows.append((name, "FAILED", outcome.error.splitlines()[0][:60], "", "no"))
        for f in outcome.figures:
            met = "" if f.met is None else "yes" if f.met else "NO"
            rows.append((f.workload, f.name, f.shown(), f.target, met))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def write(path: Path, payload: dict[str, Any], outcomes: dict[str, Outcome]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = payload | {
        "workloads": {
            name: {
                "figures": [asdict(f) for f in outcome.figures],
                "details": outcome.details,
                "error": outcome.error,
            }
            for name, outcome in outcomes.items()
        }
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
