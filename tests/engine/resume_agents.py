"""Agents and a script shared by a test and the separate Python process that resumes its runs."""

from __future__ import annotations

from app import Agent, RunContext, tool
from app.engine import Engine, ModelRouter, OpenAIProvider
from app.testing import FakeModel, call, calls, text

MODEL = "resume-model"


@tool(effect="read")
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool(effect="read")
async def greet(ctx: RunContext) -> str:
    """Greet the user."""
    return f"hello {ctx.variables['user']}"


billing = Agent(name="billing", model=MODEL, instructions="Bill.", tools=[add])
triage = Agent(
    name="triage",
    model=MODEL,
    instructions=lambda ctx: f"Help {ctx.variables['user']}.",
    tools=[add, greet],
    handoffs=[billing],
)


def script(fake: FakeModel) -> None:
    fake.script(
        MODEL,
        [
            calls(("add", {"a": 1, "b": 2}), ("greet", {})),
            call("add", {"a": 3, "b": 4}),
            call("transfer_to_billing"),
            call("add", {"a": 5, "b": 6}),
            text("All sums done."),
        ],
    )


def build_engine(base_url: str) -> Engine:
    return Engine([triage], ModelRouter(OpenAIProvider(base_url=base_url)))
