"""One module per workload; each has `run(ctx) -> Outcome`. `WORKLOADS` is the suite's order:
the ceiling first (later workloads subtract the model's own time), W1 before the workloads
compared with it (W3, W6) or loaded at half of it (chaos)."""

from __future__ import annotations

from collections.abc import Callable

from bench.context import Context
from bench.report import Outcome
from bench.workloads import (
    ceiling,
    chaos,
    engine,
    hostile,
    langgraph,
    w1,
    w2,
    w3,
    w6,
    w7,
    w8,
    w9,
    w10,
)

WORKLOADS: dict[str, Callable[[Context], Outcome]] = {
    "ceiling": ceiling.run,
    "engine": engine.run,
    "w1": w1.run,
    "w2": w2.run,
    "langgraph": langgraph.run,
    "w3": w3.run,
    "w6": w6.run,
    "w7": w7.run,
    "chaos": chaos.run,
    "hostile": hostile.run,
    "w8": w8.run,
    "w9": w9.run,
    "w10": w10.run,
}
