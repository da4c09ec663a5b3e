"""Example agents: tools, a conditional approval, an always-asking tool, a handoff, guardrails
and an MCP server's tools.

Registered by default (`AGENTS_MODULE=app.examples.agents`). Point AGENTS_MODULE at a module of
your own with the same shape: a list `agents`, and optionally a dict `providers`.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from app import Agent, AskHuman, MCPServer, RunContext, Tripwire, tool

# 13 to 19 digits, perhaps grouped by spaces or dashes: what a payment card number looks like.
CARD_NUMBER = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")


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


def _text_of(messages: list[dict[str, Any]]) -> str:
    return " ".join(str(message.get("content") or "") for message in messages)


async def no_card_numbers(messages: list[dict[str, Any]], ctx: RunContext) -> Tripwire | None:
    """A card number never reaches the model: the run fails before the model is called.
    (`async def`: a check that never blocks runs on the event loop, not in a worker thread.)"""
    if CARD_NUMBER.search(_text_of(messages)):
        return Tripwire("the message holds what looks like a card number")
    return None


async def lawyers_read_by_a_person(
    messages: list[dict[str, Any]], ctx: RunContext
) -> AskHuman | None:
    """A message that mentions a lawyer waits for a person before the model sees it."""
    if "lawyer" in _text_of(messages).lower():
        return AskHuman("the message mentions a lawyer: a person reads it first")
    return None


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
    input_guardrails=[no_card_numbers, lawyers_read_by_a_person],
)

# Its tools come from an MCP server, started by the service over stdio.
notes_server = MCPServer("notes", command=sys.executable, args=["-m", "app.examples.notes_server"])
librarian = Agent(
    name="librarian",
    description="Finds and keeps notes, with the tools of an MCP server.",
    instructions="Answer from the notes; add a note when asked.",
    mcp_servers=[notes_server],
)

agents = [triage, billing, librarian]
