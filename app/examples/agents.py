"""Example agents: tools, a conditional approval, an always-asking tool and a handoff.

Registered by default (`AGENTS_MODULE=app.examples.agents`). Point AGENTS_MODULE at a module of
your own with the same shape: a list `agents`, and optionally a dict `providers`.
"""

from __future__ import annotations

from app import Agent, RunContext, tool


@tool(effect="read")
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first addend.
        b: The second addend.
    """
    return a + b


@tool(needs_approval=True)
def delete_record(record_id: str) -> str:
    """Delete a record for good. A human approves every call.

    Args:
        record_id: The id of the record to delete.
    """
    return f"record {record_id} deleted"


@tool(needs_approval=lambda args, ctx: args["amount"] > 100, effect="unsafe")
async def refund(amount: float, ctx: RunContext) -> str:
    """Refund money to the current user; more than 100 needs a human's approval.

    Args:
        amount: How much to refund, in euros.
    """
    return f"refunded {amount:g} to {ctx.variables.get('user_id', 'the user')}"


billing = Agent(
    name="billing",
    description="Handles refunds and billing questions.",
    instructions="You handle billing. Refund when asked; be brief.",
    tools=[refund],
)

triage = Agent(
    name="triage",
    description="Answers arithmetic, deletes records, and sends billing questions to billing.",
    instructions=lambda ctx: (
        f"Help user {ctx.variables.get('user_id', 'anonymous')}. Use tools for arithmetic; "
        "hand billing questions to the billing agent."
    ),
    tools=[add, delete_record],
    handoffs=[billing],
)

agents = [triage, billing]
