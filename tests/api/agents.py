"""Agents the service tests register (as AGENTS_MODULE would)."""

from __future__ import annotations

import anyio

from app import Agent, RunContext, tool

calls_seen: list[tuple[str, str | None]] = []
release_slow = anyio.Event()
slow_started = anyio.Event()


@tool(effect="read")
def add(a: int, b: int) -> int:
    """Add two integers."""
    calls_seen.append(("add", None))
    return a + b


@tool
async def wait_for_release(ctx: RunContext) -> str:
    """Blocks until the test releases it (or the run is cancelled)."""
    calls_seen.append(("wait_for_release", ctx.run_id))
    slow_started.set()
    await release_slow.wait()
    return "released"


@tool(needs_approval=True)
def delete_record(record_id: str) -> str:
    """Delete a record."""
    calls_seen.append(("delete_record", record_id))
    return f"deleted {record_id}"


billing = Agent(name="billing", description="Billing.", instructions="Bill.", tools=[add])
calc = Agent(
    name="calc",
    description="Arithmetic.",
    instructions="Add.",
    tools=[add, wait_for_release, delete_record],
    handoffs=[billing],
)
agents = [calc, billing]


def reset() -> None:
    global release_slow, slow_started
    calls_seen.clear()
    release_slow = anyio.Event()
    slow_started = anyio.Event()


slow_started = anyio.Event()
