"""The @tool decorator: its two forms, options, and how a tool is invoked."""

from __future__ import annotations

import threading

import pytest

from app import RunContext, tool
from app.engine import Tool


def test_bare_decorator_uses_the_function_name_and_defaults() -> None:
    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return key

    assert isinstance(lookup, Tool)
    assert lookup.name == "lookup"
    assert lookup.effect == "unsafe"
    assert lookup.approval_mode == "never"
    assert lookup("k") == "k"  # still callable as the plain function
    assert lookup.spec == {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a key up.",
            "parameters": lookup.schema.json_schema,
        },
    }


def test_decorator_with_options() -> None:
    @tool(name="remove", description="Delete for good.", needs_approval=True, effect="idempotent")
    async def delete_record(record_id: str) -> str:
        """Ignored docstring."""
        return record_id

    assert (delete_record.name, delete_record.description) == ("remove", "Delete for good.")
    assert delete_record.approval_mode == "always"
    assert delete_record.effect == "idempotent"


def test_conditional_approval_sees_arguments_and_context() -> None:
    @tool(needs_approval=lambda args, ctx: args["amount"] > ctx.variables["limit"])
    def refund(amount: float) -> str:
        """Refund."""
        return "ok"

    ctx = RunContext(variables={"limit": 100})
    assert refund.approval_mode == "conditional"
    assert refund.requires_approval({"amount": 150}, ctx)
    assert not refund.requires_approval({"amount": 50}, ctx)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"effect": "dangerous"}, ValueError),
        ({"needs_approval": "yes"}, TypeError),
        ({"name": "has space"}, ValueError),
        ({"name": "x" * 65}, ValueError),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], error: type[Exception]) -> None:
    def f() -> None:
        """Do f."""

    with pytest.raises(error):
        # Ill-typed on purpose: what is under test is the check at run time.
        tool(**options)(f)  # type: ignore[call-overload]


@pytest.mark.anyio
async def test_invoke_validates_and_runs_sync_tools_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()

    @tool
    def where(n: int) -> tuple[int, bool]:
        """Report the thread."""
        return n * 2, threading.get_ident() != loop_thread

    assert await where.invoke({"n": "21"}, RunContext()) == (42, True)


@pytest.mark.anyio
async def test_invoke_awaits_async_tools() -> None:
    @tool
    async def double(n: int, ctx: RunContext) -> str:
        """Double."""
        return f"{n * 2} for {ctx.call_id}"

    assert await double.invoke({"n": 2}, RunContext(call_id="c1")) == "4 for c1"
