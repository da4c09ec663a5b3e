"""The turn loop against the fake model over HTTP: tools, failures, concurrency, endings."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from app import Agent, RunContext, tool
from app.engine import Completed, Failed, RunConfig, RunStatus
from app.testing import FakeModel, call, calls, error, text
from tests.engine.conftest import EngineFactory, Recorder

pytestmark = pytest.mark.anyio


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def explode() -> str:
    """Always fails."""
    raise RuntimeError("kaboom")


def tool_messages(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "tool"]


async def test_text_answer_completes(make_engine: EngineFactory, fake: FakeModel) -> None:
    fake.script("m", [text("Hello there.")])
    engine = make_engine([Agent(name="a", instructions="Be brief.", model="m")])
    state = engine.start("a", "Hi")

    result = await engine.run(state)

    assert result.outcome == Completed("Hello there.")
    assert (state.status, state.final_output, state.turns) == (
        RunStatus.COMPLETED,
        "Hello there.",
        1,
    )
    assert state.messages == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there."},
    ]
    sent = fake.requests_for("m")[0]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "tools" not in sent


async def test_tool_turn_then_answer_with_accounting(
    make_engine: EngineFactory, fake: FakeModel, recorder: Recorder
) -> None:
    fake.script("m", [call("add", {"a": 2, "b": 3}), text("5")])
    engine = make_engine([Agent(name="calc", model="m", tools=[add])])
    state = engine.start("calc", "2+3?")

    result = await engine.run(state, recorder)

    assert result.outcome == Completed("5")
    assert tool_messages(state.messages) == ["5"]
    assert fake.requests_for("m")[0]["tools"] == [add.spec]
    assert [len(step.tool_calls) for step in state.steps] == [1, 0]
    recorded = state.steps[0].tool_calls[0]
    assert (recorded.name, recorded.arguments, recorded.output, recorded.status) == (
        "add",
        {"a": 2, "b": 3},
        "5",
        "completed",
    )
    assert all(step.agent == "calc" and step.duration_ms > 0 for step in state.steps)
    usages = list(fake.requests_for("m"))
    assert state.usage.requests == len(usages) == 2
    assert state.usage.total_tokens == state.usage.prompt_tokens + state.usage.completion_tokens > 0
    names = [event.name for event in result.events]
    assert names == [
        "message",
        "tool_call.started",
        "tool_call.completed",
        "message",
        "message",
    ]
    assert recorder.events == result.events
    # The start of the calls is stored before they run.
    first_state, first_events = recorder.checkpoints[0]
    assert [e.name for e in first_events] == ["message", "tool_call.started"]
    assert first_state["steps"][0]["tool_calls"][0]["status"] == "running"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (call("add", "{not json"), "Error: the arguments of add are not valid JSON"),
        (call("add", "[1, 2]"), "Error: the arguments of add must be a JSON object"),
        (call("add", '{"a": NaN, "b": 1}'), "Error: the arguments of add are not valid JSON"),
        (call("add", {"a": "x", "b": 1}), "Error: invalid arguments for add: a: Input should be"),
        (call("add", {"a": 1}), "Error: invalid arguments for add: b: Field required"),
        (call("nope", {}), "Error: there is no tool named 'nope'. Available tools: add, explode."),
        (call("explode"), "Error: the tool explode raised RuntimeError: kaboom"),
    ],
)
async def test_tool_failures_become_error_text_and_the_loop_goes_on(
    make_engine: EngineFactory, fake: FakeModel, reply: Any, expected: str
) -> None:
    fake.script("m", [reply, text("recovered")])
    engine = make_engine([Agent(name="a", model="m", tools=[add, explode])])
    state = engine.start("a", "go")

    result = await engine.run(state)

    assert result.outcome == Completed("recovered")
    [output] = tool_messages(state.messages)
    assert output.startswith(expected)
    assert state.steps[0].tool_calls[0].status == "failed"
    # The model saw the error text as the call's result.
    assert fake.requests_for("m")[1]["messages"][-1]["content"] == output


async def test_tool_errors_fail_ends_the_run(make_engine: EngineFactory, fake: FakeModel) -> None:
    fake.script("m", [calls(("add", {"a": 1, "b": 1}), ("explode", {})), text("never")])
    engine = make_engine([Agent(name="a", model="m", tools=[add, explode])])
    state = engine.start("a", "go", config=RunConfig(tool_errors="fail"))

    result = await engine.run(state)

    assert isinstance(result.outcome, Failed)
    assert result.outcome.error.code == "tool_error"
    assert "explode" in result.outcome.error.message
    assert state.status is RunStatus.FAILED
    assert len(fake.requests_for("m")) == 1
    # The conversation stays valid: every call has its result message.
    assert tool_messages(state.messages) == [
        "2",
        "Error: the tool explode raised RuntimeError: kaboom",
    ]


async def test_invalid_call_with_tool_errors_fail_runs_nothing(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    ran: list[int] = []

    @tool
    def record(n: int) -> None:
        """Record."""
        ran.append(n)

    fake.script("m", [calls(("record", {"n": 1}), ("missing", {}))])
    engine = make_engine([Agent(name="a", model="m", tools=[record])])
    state = engine.start("a", "go", config=RunConfig(tool_errors="fail"))

    result = await engine.run(state)

    assert isinstance(result.outcome, Failed)
    assert result.outcome.error.code == "tool_error"
    assert ran == []
    assert [c.status for c in state.steps[0].tool_calls] == ["cancelled", "failed"]


def rendezvous() -> tuple[Any, Any]:
    """Two async tools that each wait for the other's signal: done only if run concurrently."""
    ping, pong = anyio.Event(), anyio.Event()

    @tool
    async def first() -> str:
        """First."""
        ping.set()
        with anyio.fail_after(5):
            await pong.wait()
        return "first done"

    @tool
    async def second() -> str:
        """Second."""
        pong.set()
        with anyio.fail_after(5):
            await ping.wait()
        return "second done"

    return first, second


async def test_missing_and_repeated_call_ids_are_made_unique(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    reply = calls(("add", {"a": 1, "b": 1}), ("add", {"a": 2, "b": 2}), ("add", {"a": 3, "b": 3}))
    reply.tool_calls[0].id = "same"
    reply.tool_calls[1].id = "same"
    reply.tool_calls[2].id = ""
    fake.script("m", [reply, text("ok")])
    engine = make_engine([Agent(name="a", model="m", tools=[add])])
    state = engine.start("a", "go")

    await engine.run(state)

    ids = [call["id"] for call in state.messages[1]["tool_calls"]]
    assert ids == ["same", "call_t1_1", "call_t1_2"]
    assert [m["tool_call_id"] for m in state.messages if m["role"] == "tool"] == ids
    assert tool_messages(state.messages) == ["2", "4", "6"]


async def test_tool_calls_run_concurrently(make_engine: EngineFactory, fake: FakeModel) -> None:
    first, second = rendezvous()
    fake.script("m", [calls(("first", {}), ("second", {})), text("ok")])
    engine = make_engine([Agent(name="a", model="m", tools=[first, second])])
    state = engine.start("a", "go")

    await engine.run(state)

    assert tool_messages(state.messages) == ["first done", "second done"]


@pytest.mark.parametrize("where", ["config", "agent"])
async def test_tool_calls_run_one_after_another_when_parallel_is_off(
    make_engine: EngineFactory, fake: FakeModel, where: str
) -> None:
    order: list[str] = []

    @tool
    async def slow() -> str:
        """Slow."""
        order.append("slow start")
        # Every other task runs as far as it can first: a quick call running beside this one
        # would be in the order before "slow end".
        await anyio.wait_all_tasks_blocked()
        order.append("slow end")
        return "slow"

    @tool
    async def quick() -> str:
        """Quick."""
        order.append("quick")
        return "quick"

    fake.script("m", [calls(("slow", {}), ("quick", {})), text("ok")])
    agent_option = False if where == "agent" else None
    engine = make_engine(
        [Agent(name="a", model="m", tools=[slow, quick], parallel_tool_calls=agent_option)]
    )
    config = RunConfig(parallel_tool_calls=where != "config")
    state = engine.start("a", "go", config=config)

    await engine.run(state)

    assert order == ["slow start", "slow end", "quick"]
    assert fake.requests_for("m")[0]["parallel_tool_calls"] is False


async def test_concurrent_results_enter_history_in_call_order(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    early_done = anyio.Event()

    @tool
    async def late() -> str:
        """Late."""
        with anyio.fail_after(10):  # bounded: were the calls not concurrent, nothing would set it
            await early_done.wait()
        return "late"

    @tool
    async def early() -> str:
        """Early."""
        early_done.set()
        return "early"

    fake.script("m", [calls(("late", {}), ("early", {})), text("ok")])
    engine = make_engine([Agent(name="a", model="m", tools=[late, early])])
    state = engine.start("a", "go")
    result = await engine.run(state)

    assert tool_messages(state.messages) == ["late", "early"]
    completed = [e.data["output"] for e in result.events if e.name == "tool_call.completed"]
    assert completed == ["early", "late"]


async def test_sync_tools_leave_the_event_loop_free(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    released = threading.Event()

    @tool
    def blocking() -> str:
        """Blocks its thread until the async tool releases it."""
        return "released" if released.wait(timeout=5) else "timed out"

    @tool
    async def release() -> str:
        """Release the blocking tool."""
        released.set()
        return "set"

    fake.script("m", [calls(("blocking", {}), ("release", {})), text("ok")])
    engine = make_engine([Agent(name="a", model="m", tools=[blocking, release])])
    state = engine.start("a", "go")

    await engine.run(state)

    assert tool_messages(state.messages) == ["released", "set"]


async def test_one_failing_tool_never_stops_the_others(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("m", [calls(("explode", {}), ("add", {"a": 1, "b": 2})), text("ok")])
    engine = make_engine([Agent(name="a", model="m", tools=[add, explode])])
    state = engine.start("a", "go")

    await engine.run(state)

    assert [c.status for c in state.steps[0].tool_calls] == ["failed", "completed"]
    assert tool_messages(state.messages)[1] == "3"


async def test_dynamic_instructions_sync_and_async(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    async def billing_instructions(ctx: RunContext) -> str:
        return f"Bill {ctx.variables['user_id']}."

    billing = Agent(name="billing", model="m", instructions=billing_instructions)
    triage = Agent(
        name="triage",
        model="m",
        instructions=lambda ctx: f"Help user {ctx.variables.get('user_id')}.",
        handoffs=[billing],
    )
    fake.script("m", [call("transfer_to_billing"), text("done")])
    engine = make_engine([triage])
    state = engine.start("triage", "I was charged twice", variables={"user_id": "u_1"})

    await engine.run(state)

    systems = [r["messages"][0]["content"] for r in fake.requests_for("m")]
    assert systems == ["Help user u_1.", "Bill u_1."]


async def test_handoff_tool_switches_agent_model_and_tools(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    billing = Agent(name="billing", description="Billing questions.", model="m2", tools=[add])
    triage = Agent(name="triage", model="m1", handoffs=[billing])
    fake.script("m1", [call("transfer_to_billing")])
    # The fake picks by position in the conversation: billing's answer is its second reply.
    fake.script("m2", [text("(not reached)"), text("billing here")])
    engine = make_engine([triage])
    state = engine.start("triage", "refund please")

    result = await engine.run(state)

    assert result.outcome == Completed("billing here")
    assert state.current_agent == "billing"
    assert [s.agent for s in state.steps] == ["triage", "billing"]
    first_tools = fake.requests_for("m1")[0]["tools"]
    assert first_tools[0]["function"]["name"] == "transfer_to_billing"
    assert "Billing questions." in first_tools[0]["function"]["description"]
    assert fake.requests_for("m2")[0]["tools"] == [add.spec]
    assert tool_messages(state.messages) == ["Transferred to billing."]
    changed = [e.data for e in result.events if e.name == "agent.changed"]
    assert changed == [{"from": "triage", "to": "billing"}]


async def test_a_tool_returning_an_agent_hands_off(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    expert = Agent(name="expert", model="m")

    @tool
    def escalate(reason: str) -> Agent:
        """Escalate to the expert."""
        return expert

    triage = Agent(name="triage", model="m", tools=[escalate])
    fake.script("m", [call("escalate", {"reason": "hard"}), text("expert answer")])
    engine = make_engine([triage, expert])
    state = engine.start("triage", "hard question")

    await engine.run(state)

    assert state.current_agent == "expert"
    assert state.steps[-1].agent == "expert"


async def test_of_two_handoffs_the_first_in_call_order_wins(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    sales = Agent(name="sales", model="m")
    support = Agent(name="support", model="m")
    recorder = Recorder()

    @tool
    async def escalate() -> Agent:
        """Escalate."""
        # Finishes after the transfer below, yet comes first in call order.
        with anyio.fail_after(10):  # bounded: were the calls not concurrent, nothing would set it
            await recorder.completed["transfer_to_sales"].wait()
        return support

    triage = Agent(name="triage", model="m", tools=[escalate], handoffs=[sales])
    fake.script("m", [calls(("escalate", {}), ("transfer_to_sales", {})), text("hi")])
    engine = make_engine([triage, support])
    state = engine.start("triage", "help")

    await engine.run(state, recorder)

    assert state.current_agent == "support"
    assert tool_messages(state.messages) == [
        "Transferred to support.",
        "Not transferred to sales: this turn hands off to support.",
    ]


async def test_handoff_to_an_unregistered_agent_is_an_error_text(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    @tool
    def stray() -> Agent:
        """Return an agent nobody registered."""
        return Agent(name="ghost")

    fake.script("m", [call("stray"), text("ok")])
    engine = make_engine([Agent(name="a", model="m", tools=[stray])])
    state = engine.start("a", "go")

    await engine.run(state)

    assert state.current_agent == "a"
    assert "not a registered agent" in tool_messages(state.messages)[0]


async def test_max_turns_exceeded(make_engine: EngineFactory, fake: FakeModel) -> None:
    fake.script("m", [call("add", {"a": 1, "b": 1})] * 5)
    engine = make_engine([Agent(name="a", model="m", tools=[add])])
    state = engine.start("a", "loop", config=RunConfig(max_turns=3))

    result = await engine.run(state)

    assert isinstance(result.outcome, Failed)
    assert result.outcome.error.code == "max_turns_exceeded"
    assert len(fake.requests_for("m")) == state.turns == 3


async def test_timeout_counts_execution_time(make_engine: EngineFactory, fake: FakeModel) -> None:
    cancelled_seen = threading.Event()

    @tool
    def slow(ctx: RunContext) -> str:
        """Wait until cancelled."""
        for _ in range(500):
            if ctx.cancelled:
                cancelled_seen.set()
                return "stopped"
            threading.Event().wait(0.01)
        return "never cancelled"

    fake.script("m", [call("slow"), text("unreachable")])
    engine = make_engine([Agent(name="a", model="m", tools=[slow])])
    state = engine.start("a", "go", config=RunConfig(timeout_seconds=0.3))

    result = await engine.run(state)

    assert isinstance(result.outcome, Failed)
    assert result.outcome.error.code == "timeout"
    assert state.elapsed_ms >= 300
    assert state.steps[0].tool_calls[0].status == "cancelled"
    assert tool_messages(state.messages) == [
        "Tool call not completed: the run failed (timeout). "
        "It had started; whether it took effect is unknown."
    ]
    assert cancelled_seen.wait(timeout=5)


async def test_timeout_budget_carries_across_turns(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("m", [text("hi")])
    engine = make_engine([Agent(name="a", model="m")])
    state = engine.start("a", "go", config=RunConfig(timeout_seconds=1))
    state.elapsed_ms = 1000  # spent in earlier turns

    result = await engine.run(state)

    assert isinstance(result.outcome, Failed)
    assert result.outcome.error.code == "timeout"
    assert fake.requests_for("m") == []


async def test_transient_server_error_is_retried_by_the_client(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("m", [text("ok", error=error(500, times=1).error)])
    engine = make_engine([Agent(name="a", model="m")])
    state = engine.start("a", "go")

    result = await engine.run(state)

    assert result.outcome == Completed("ok")
    assert len(fake.requests_for("m")) == 2
    assert state.usage.requests == 1


async def test_persistent_server_error_is_a_model_error(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("m", [error(500, message="overloaded")])
    engine = make_engine([Agent(name="a", model="m")])
    state = engine.start("a", "go")

    result = await engine.run(state)

    assert isinstance(result.outcome, Failed)
    assert result.outcome.error.code == "model_error"
    assert result.outcome.error.message == "model 'm': the server answered 500: overloaded"
    assert len(fake.requests_for("m")) == 3  # the first try and the client's two retries
    assert state.steps == []


async def test_unknown_provider_is_a_model_error_naming_it(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    engine = make_engine([Agent(name="a", model="nowhere/gpt")])
    state = engine.start("a", "go")

    result = await engine.run(state)

    assert isinstance(result.outcome, Failed)
    assert result.outcome.error.code == "model_error"
    assert "unknown model provider 'nowhere'" in result.outcome.error.message


async def test_run_config_overrides_the_agent(make_engine: EngineFactory, fake: FakeModel) -> None:
    fake.script("m", [text("a"), text("b")])
    engine = make_engine([Agent(name="a", model="m", temperature=0.9, max_tokens=50)])

    await engine.run(engine.start("a", "first"))
    await engine.run(engine.start("a", "second", config=RunConfig(temperature=0.1, max_tokens=7)))

    sent = [(r["temperature"], r["max_tokens"]) for r in fake.requests_for("m")]
    assert sent == [(0.9, 50), (0.1, 7)]


async def test_debug_logs_requests_responses_and_tool_calls(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    from structlog.testing import capture_logs

    fake.script("m", [call("add", {"a": 1, "b": 2}), text("3")])
    engine = make_engine([Agent(name="a", model="m", tools=[add])])
    state = engine.start("a", "go", config=RunConfig(debug=True), run_id="run_dbg")

    with capture_logs() as logs:
        await engine.run(state)

    names = [entry["event"] for entry in logs]
    assert names.count("model.request") == 2
    assert names.count("model.response") == 2
    assert "tool_call.completed" in names
    assert all(entry["run_id"] == "run_dbg" for entry in logs)
    completed = next(e for e in logs if e["event"] == "tool_call.completed")
    assert completed["output"] == "3"
