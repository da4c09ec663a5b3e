"""Engine alone: our engine and the openai-agents Runner, each in its own process (root and
peers project) against the same fake in the same suite run, each beside the bare client; the
per-turn overhead is its time per turn less the bare client's."""

from __future__ import annotations

import json
import sys
from typing import Any

from bench.context import Context
from bench.procs import PEERS, ROOT, child_env, output
from bench.report import Figure, Outcome, at_most

TIMEOUT_SECONDS = 600


def _child(args: list[str]) -> dict[str, Any]:
    """The figures a child process prints as its last line."""
    out = output(args, env=child_env(PYTHONPATH=str(ROOT)), cwd=ROOT, timeout=TIMEOUT_SECONDS)
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return figures


def run(ctx: Context) -> Outcome:
    runs = str(ctx.count(2000, 400))
    common = ["--base-url", ctx.fake.base_url, "--runs", runs]
    ours = _child([sys.executable, "-m", "bench.engine_child", *common])
    peer_script = str(PEERS / "runner.py")
    theirs = _child(["uv", "run", "--project", str(PEERS), "python", peer_script, *common])
    overhead, peer_overhead = ours["overhead"]["ms_per_turn"], theirs["overhead"]["ms_per_turn"]
    return Outcome(
        figures=[
            Figure(
                "engine",
                "agent-runs: overhead per turn beyond the model call",
                overhead,
                "ms",
                "<= 0.5 ms",
                at_most(overhead, 0.5),
            ),
            Figure(
                "engine",
                "openai-agents Runner: overhead per turn",
                peer_overhead,
                "ms",
                "ours lower",
                overhead < peer_overhead,
            ),
            Figure(
                "engine",
                "agent-runs: CPU per turn beyond the bare client",
                ours["overhead"]["cpu_ms_per_turn"],
                "ms",
            ),
            Figure(
                "engine",
                "Runner: CPU per turn beyond the bare client",
                theirs["overhead"]["cpu_ms_per_turn"],
                "ms",
            ),
        ],
        details={"agent-runs": ours, "openai-agents": theirs},
    )
