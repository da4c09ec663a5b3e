"""An agent with input and output guardrails, for the service's guardrail tests (AGENTS_MODULE)."""

from __future__ import annotations

from typing import Any

import anyio

from app import Agent, AskHuman, Principal, RunContext, Tripwire

checks_seen: list[tuple[str, Any, Principal]] = []  # (guardrail, what it was given, principal)
review_started = anyio.Event()
review_released = anyio.Event()


def screen_input(messages: list[dict[str, Any]], ctx: RunContext) -> Tripwire | AskHuman | None:
    """A password trips; a refund asks a person."""
    words = str(messages[-1].get("content"))
    checks_seen.append(("screen_input", words, ctx.principal))
    if "password" in words:
        return Tripwire("the input holds a password")
    if "refund" in words:
        return AskHuman("refunds need a person's eye")
    return None


async def screen_output(output: Any, ctx: RunContext) -> bool | AskHuman:
    """A promise asks a person; rudeness trips; "slow" holds the check until the test says."""
    checks_seen.append(("screen_output", output, ctx.principal))
    said = str(output)
    if "slow" in said:
        review_started.set()
        await review_released.wait()
    if "promise" in said:
        return AskHuman("the answer makes a promise")
    return "rude" not in said


support = Agent(
    name="support",
    description="Answers customers, within guardrails.",
    instructions="Help the customer.",
    input_guardrails=[screen_input],
    output_guardrails=[screen_output],
)
agents = [support]


def reset() -> None:
    global review_started, review_released
    checks_seen.clear()
    review_started = anyio.Event()
    review_released = anyio.Event()
