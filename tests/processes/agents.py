"""Agents the process tests run in real `agent-runs` processes (AGENTS_MODULE).

Every tool call appends a line to the journal file named by TOOL_JOURNAL, with the process id,
so a test sees which process ran what, and how often, across kills and takeovers.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from app import Agent, RunContext, tool


def journal(kind: str, ctx: RunContext, **data: Any) -> None:
    entry = {"kind": kind, "call_id": ctx.call_id, "run_id": ctx.run_id, "pid": os.getpid()}
    line = json.dumps({**entry, **data}) + "\n"
    # One write of a short line with O_APPEND: lines of several processes never interleave.
    descriptor = os.open(os.environ["TOOL_JOURNAL"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


@tool(effect="idempotent")
def step(ctx: RunContext, label: str, seconds: float = 0) -> str:
    """A step that is safe to repeat with the same call id.

    Args:
        label: What the step is.
        seconds: How long it takes.
    """
    journal("step.started", ctx, label=label)
    time.sleep(seconds)
    journal("step.done", ctx, label=label)
    return f"{label} done by {os.getpid()}"


@tool(effect="unsafe")
def charge(ctx: RunContext, amount: int, seconds: float = 0) -> str:
    """Charge a card: must never run twice without a person saying so.

    Args:
        amount: How much.
        seconds: How long the payment provider takes.
    """
    journal("charge.started", ctx, amount=amount)
    time.sleep(seconds)
    journal("charge.done", ctx, amount=amount)
    return f"charged {amount} by {os.getpid()}"


@tool(needs_approval=True)
def wire(ctx: RunContext, amount: int) -> str:
    """Wire money, once a person approves.

    Args:
        amount: How much.
    """
    journal("wire", ctx, amount=amount)
    return f"wired {amount}"


@tool(effect="idempotent")
def crash(ctx: RunContext) -> str:
    """Kills the process that runs it (a poison run)."""
    journal("crash", ctx)
    os.kill(os.getpid(), signal.SIGKILL)
    return "unreachable"


def slow_review(output: Any, ctx: RunContext) -> None:
    """An output guardrail that takes its time over an answer saying "slow"."""
    journal("review.started", ctx, output=output)
    if "slow" in str(output):
        time.sleep(float(os.environ.get("REVIEW_SECONDS", "3")))
    journal("review.done", ctx, output=output)


ops = Agent(name="ops", description="Runs steps and charges.", tools=[step, charge, wire, crash])
reviewed = Agent(name="reviewed", description="Answers, reviewed.", output_guardrails=[slow_review])
agents = [ops, reviewed]
