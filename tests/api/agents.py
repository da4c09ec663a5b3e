"""Agents the service tests register (as AGENTS_MODULE would)."""

from __future__ import annotations

import anyio

from app import Agent, ApprovalRequest, Principal, RunContext, tool

calls_seen: list[tuple[str, str | None]] = []
principals_seen: list[tuple[str, Principal]] = []  # (what saw it, the principal)
release_slow = anyio.Event()
slow_started = anyio.Event()


@tool(effect="read")
def add(a: int, b: int, ctx: RunContext) -> int:
    """Add two integers."""
    calls_seen.append(("add", None))
    principals_seen.append(("tool", ctx.principal))
    return a + b


@tool
async def wait_for_release(ctx: RunContext) -> str:
    """Blocks until the test releases it (or the run is cancelled)."""
    calls_seen.append(("wait_for_release", ctx.run_id))
    slow_started.set()
    await release_slow.wait()
    return "released"


@tool(needs_approval=True)
async def guarded_wait() -> str:
    """Needs approval, then blocks until the test releases it."""
    calls_seen.append(("guarded_wait", None))
    await release_slow.wait()
    return "released"


@tool(effect="read")
def unstorable_text(text: str) -> str:
    """Returns its text with a NUL and a lone surrogate around it, as a careless tool might."""
    return f"\x00{text}\ud800"


@tool(effect="read")
def long_text(kilobytes: int, fill: str = "x") -> str:
    """Returns that many kilobytes of text."""
    return fill * (kilobytes * 1024 // len(fill.encode()))


@tool(needs_approval=True)
def delete_record(record_id: str) -> str:
    """Delete a record."""
    calls_seen.append(("delete_record", record_id))
    return f"deleted {record_id}"


@tool(needs_approval=lambda arguments, ctx: arguments["amount"] > 100, effect="idempotent")
def refund(amount: int) -> str:
    """Refund an amount in euros; above 100 a person approves it."""
    return f"refunded {amount}"


@tool(external=True)
def take_photo(subject: str) -> str:
    """Take a photo with the user's camera (the client does it)."""
    calls_seen.append(("take_photo", subject))
    return "never run: the client answers"


def no_deletes_on_friday(request: ApprovalRequest, ctx: RunContext) -> tuple[bool, str] | None:
    """Rejects deleting record "friday"; asks a human for the others."""
    principals_seen.append(("approval handler", ctx.principal))
    if request.arguments.get("record_id") == "friday":
        return False, "not on fridays"
    return None


def careful_instructions(ctx: RunContext) -> str:
    principals_seen.append(("instructions", ctx.principal))
    return f"Delete carefully, for {ctx.principal.name}."


careful = Agent(
    name="careful",
    description="Deletes with an approval handler.",
    instructions=careful_instructions,
    tools=[delete_record, refund],
    approval_handler=no_deletes_on_friday,
)
billing = Agent(name="billing", description="Billing.", instructions="Bill.", tools=[add])
calc = Agent(
    name="calc",
    description="Arithmetic.",
    instructions="Add.",
    tools=[
        add,
        wait_for_release,
        delete_record,
        guarded_wait,
        unstorable_text,
        long_text,
        take_photo,
    ],
    handoffs=[billing],
)
agents = [calc, billing, careful]


def reset() -> None:
    global release_slow, slow_started
    calls_seen.clear()
    principals_seen.clear()
    release_slow = anyio.Event()
    slow_started = anyio.Event()


slow_started = anyio.Event()
