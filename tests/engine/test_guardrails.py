"""Guardrails in the engine: input checked before the model, output before completion; a pass,
a trip or a person asked, and a run resumed from its stored state mid-check."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from app import Agent, AskHuman, Principal, RunContext, Tripwire
from app.engine import Completed, DecisionInput, Engine, Failed, Paused, RunState, RunStatus
from app.engine.errors import CallAlreadyDecided, InvalidDecision
from app.engine.events import RunEvent
from app.engine.state import HeldOutput, Message
from app.testing import FakeModel, call, text
from tests.engine.conftest import EngineFactory, Recorder

pytestmark = pytest.mark.anyio


def roundtrip(state: RunState) -> RunState:
    return RunState.from_json(json.loads(json.dumps(state.to_json())))


def checked(events: list[RunEvent]) -> list[dict[str, Any]]:
    return [event.data for event in events if event.name == "guardrail.checked"]


def polite(messages: list[Message], ctx: RunContext) -> bool:
    return "stupid" not in str(messages[-1]["content"])


async def no_secrets(messages: list[Message], ctx: RunContext) -> Tripwire | None:
    await anyio.lowlevel.checkpoint()
    if "password" in str(messages[-1]["content"]):
        return Tripwire("the input holds a password")
    return None


def large_refund(messages: list[Message], ctx: RunContext) -> AskHuman | None:
    if "refund" in str(messages[-1]["content"]):
        return AskHuman("refunds need a person's eye")
    return None


def broken(messages: list[Message], ctx: RunContext) -> None:
    raise RuntimeError("the moderation service is down")


def confused(messages: list[Message], ctx: RunContext) -> str:
    return "maybe"


async def test_passing_input_guardrails_say_so_and_the_model_answers(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("m", [text("Hello!")])
    agent = Agent(name="a", model="m", input_guardrails=[polite, no_secrets, large_refund])
    engine = make_engine([agent])
    state = engine.start("a", "hi there")

    result = await engine.run(state)

    assert state.status is RunStatus.COMPLETED
    assert state.final_output == "Hello!"
    assert checked(result.events) == [
        {"name": name, "stage": "input", "result": "passed", "reason": None}
        for name in ("polite", "no_secrets", "large_refund")
    ]
    assert [e.name for e in result.events][:3] == ["guardrail.checked"] * 3


@pytest.mark.parametrize(
    ("words", "name", "message"),
    [
        ("you stupid bot", "polite", "guardrail 'polite' (input) tripped"),
        (
            "my password is hunter2",
            "no_secrets",
            "guardrail 'no_secrets' (input) tripped: the input holds a password",
        ),
    ],
)
async def test_a_tripped_input_guardrail_fails_the_run_before_the_model_is_called(
    make_engine: EngineFactory, fake: FakeModel, words: str, name: str, message: str
) -> None:
    fake.script("m", [text("never")])
    engine = make_engine([Agent(name="a", model="m", input_guardrails=[polite, no_secrets])])
    state = engine.start("a", words)

    result = await engine.run(state)

    assert fake.requests_for("m") == []
    assert state.status is RunStatus.FAILED
    assert state.error is not None
    assert (state.error.code, state.error.message) == ("guardrail_tripped", message)
    assert state.turns == 0
    [tripped] = [c for c in checked(result.events) if c["result"] == "tripped"]
    assert tripped["name"] == name


@pytest.mark.parametrize(
    ("guardrail", "reason"),
    [
        (broken, "raised RuntimeError: the moderation service is down"),
        (confused, "returned 'maybe', not None, a bool, Tripwire or AskHuman"),
    ],
)
async def test_a_guardrail_that_raises_or_answers_nonsense_trips(
    make_engine: EngineFactory, fake: FakeModel, guardrail: Any, reason: str
) -> None:
    fake.script("m", [text("never")])
    engine = make_engine([Agent(name="a", model="m", input_guardrails=[guardrail])])
    state = engine.start("a", "hi")

    result = await engine.run(state)

    assert fake.requests_for("m") == []
    assert state.error is not None
    assert state.error.code == "guardrail_tripped"
    assert reason in state.error.message
    assert checked(result.events)[0]["reason"] == reason


async def test_an_input_guardrail_asking_a_person_parks_the_run_and_approval_goes_on(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("m", [text("Refunded.")])
    engine = make_engine([Agent(name="a", model="m", input_guardrails=[polite, large_refund])])
    state = engine.start("a", "refund order 7")

    result = await engine.run(state)

    assert isinstance(result.outcome, Paused)
    assert fake.requests_for("m") == []
    assert state.status is RunStatus.PENDING_APPROVAL
    state = roundtrip(state)  # as stored: any process decides and continues it
    [item] = state.pending_approvals
    assert (item.call_id, item.tool, item.kind, item.agent) == (
        "guardrail_input_large_refund",
        "large_refund",
        "guardrail",
        "a",
    )
    assert item.reason == "refunds need a person's eye"
    assert item.arguments == {}
    assert checked(result.events)[1] == {
        "name": "large_refund",
        "stage": "input",
        "result": "ask_human",
        "reason": "refunds need a person's eye",
    }
    requested = [e.data for e in result.events if e.name == "approval.requested"]
    assert requested == [
        {
            "call_id": "guardrail_input_large_refund",
            "tool": "large_refund",
            "arguments": {},
            "agent": "a",
            "in_doubt": False,
            "kind": "guardrail",
            "reason": "refunds need a person's eye",
        }
    ]

    emitted = engine.decide(state, [DecisionInput(item.call_id, True, "checked the order")])
    result = await engine.run(state)

    assert [e.name for e in emitted] == ["approval.decided"]
    assert state.status is RunStatus.COMPLETED
    assert state.final_output == "Refunded."
    assert len(fake.requests_for("m")) == 1
    assert checked(result.events) == []  # approved: the guardrails are not asked again
    [decision] = state.decisions
    assert (decision.call_id, decision.approved, decision.reason) == (
        "guardrail_input_large_refund",
        True,
        "checked the order",
    )
    assert state.guardrail_asks == []


async def test_a_person_rejecting_a_guardrail_s_ask_fails_the_run(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("m", [text("never")])
    engine = make_engine([Agent(name="a", model="m", input_guardrails=[large_refund])])
    state = engine.start("a", "refund everything")
    await engine.run(state)

    engine.decide(state, [DecisionInput("guardrail_input_large_refund", False, "not ours")])
    assert state.status is RunStatus.RUNNING  # an executor ends it, as any run it drives
    result = await engine.run(roundtrip(state))

    assert isinstance(result.outcome, Failed)
    assert result.outcome.error.code == "guardrail_tripped"
    assert result.outcome.error.message == (
        "guardrail 'large_refund' (input) asked a person, who rejected it: refunds need a "
        "person's eye (decision: not ours)"
    )
    assert fake.requests_for("m") == []


async def test_several_asks_are_decided_in_parts_and_the_run_waits_for_the_last(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    def night_shift(messages: list[Message], ctx: RunContext) -> AskHuman:
        return AskHuman("nobody is on duty")

    fake.script("m", [text("Done.")])
    agent = Agent(name="a", model="m", input_guardrails=[large_refund, night_shift])
    engine = make_engine([agent])
    state = engine.start("a", "refund order 9")
    await engine.run(state)
    assert [p.call_id for p in state.pending_approvals] == [
        "guardrail_input_large_refund",
        "guardrail_input_night_shift",
    ]

    engine.decide(state, [DecisionInput("guardrail_input_night_shift", True)])
    assert state.status is RunStatus.PENDING_APPROVAL
    assert [p.tool for p in state.pending_approvals] == ["large_refund"]
    with pytest.raises(CallAlreadyDecided):
        engine.decide(state, [DecisionInput("guardrail_input_night_shift", True)])
    engine.decide(state, [DecisionInput("guardrail_input_large_refund", True)])
    result = await engine.run(state)

    assert isinstance(result.outcome, Completed)


@pytest.mark.parametrize(
    "decision",
    [
        DecisionInput("guardrail_input_large_refund", True, output="done by hand"),
        DecisionInput("guardrail_input_large_refund", True, arguments={"x": 1}),
        DecisionInput("guardrail_input_large_refund", True, remember=True),
    ],
)
async def test_a_guardrail_s_ask_takes_no_output_arguments_or_remember(
    make_engine: EngineFactory, fake: FakeModel, decision: DecisionInput
) -> None:
    engine = make_engine([Agent(name="a", model="m", input_guardrails=[large_refund])])
    state = engine.start("a", "refund it")
    await engine.run(state)

    with pytest.raises(InvalidDecision, match="guardrail 'large_refund' asking a person"):
        engine.decide(state, [decision])
    assert state.decisions == []
    assert len(state.pending_approvals) == 1


async def test_input_guardrails_see_only_the_run_s_new_input_and_the_context(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    seen: list[tuple[list[Message], RunContext]] = []

    def record(messages: list[Message], ctx: RunContext) -> None:
        seen.append((list(messages), ctx))
        messages.clear()  # its own copy: the run keeps its input

    fake.script("m", [text("ok")])
    engine = make_engine([Agent(name="a", model="m", input_guardrails=[record])])
    history = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "yes"}]
    state = engine.start("a", "now", history=history, variables={"plan": "gold"}, run_id="r1")
    principal = Principal("ui", "acme", frozenset({"approver"}))

    await engine.run(state, principal=principal)

    [(messages, ctx)] = seen
    assert messages == [{"role": "user", "content": "now"}]
    assert ctx.principal == principal
    assert ctx.variables == {"plan": "gold"}
    assert ctx.run_id == "r1"
    sent = fake.requests_for("m")[0]["messages"]
    assert [m["content"] for m in sent] == ["earlier", "yes", "now"]


def short(output: Any, ctx: RunContext) -> Tripwire | AskHuman | None:
    if "refund" in str(output):
        return AskHuman("the answer promises a refund")
    if len(str(output)) > 40:
        return Tripwire("the answer is too long")
    return None


async def test_output_guardrails_check_the_final_answer_before_the_run_completes(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("m", [text("x" * 50)])
    engine = make_engine([Agent(name="a", model="m", output_guardrails=[short])])
    state = engine.start("a", "talk")

    result = await engine.run(state)

    assert state.status is RunStatus.FAILED
    assert state.error is not None
    assert state.error.message == "guardrail 'short' (output) tripped: the answer is too long"
    assert state.final_output is None
    assert state.held_output is None
    assert checked(result.events) == [
        {
            "name": "short",
            "stage": "output",
            "result": "tripped",
            "reason": "the answer is too long",
        }
    ]
    # The answer is kept in the conversation all the same: it is what the model said.
    assert state.messages[-1]["content"] == "x" * 50


async def test_an_output_guardrail_asking_a_person_holds_the_answer_until_approved(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    fake.script("m", [text("We will refund you.")])
    engine = make_engine([Agent(name="a", model="m", output_guardrails=[short])])
    state = engine.start("a", "talk")
    await engine.run(state)
    state = roundtrip(state)
    [item] = state.pending_approvals
    assert (item.call_id, item.kind, item.reason) == (
        "guardrail_output_short",
        "guardrail",
        "the answer promises a refund",
    )
    assert (state.final_output, state.held_output) == (None, HeldOutput("We will refund you."))

    engine.decide(state, [DecisionInput(item.call_id, True)])
    result = await engine.run(state)

    assert isinstance(result.outcome, Completed)
    assert state.final_output == "We will refund you."
    assert len(fake.requests_for("m")) == 1
    assert checked(result.events) == []
    assert state.held_output is None


async def test_output_guardrails_get_the_validated_value_of_structured_output(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    given: list[Any] = []

    def total_is_small(output: Any, ctx: RunContext) -> bool:
        given.append(output)
        return bool(output["total"] < 100)

    schema = {
        "type": "object",
        "properties": {"total": {"type": "integer"}},
        "required": ["total"],
    }
    fake.script("m", [text('{"total": 500}')])
    agent = Agent(name="a", model="m", output_type=schema, output_guardrails=[total_is_small])
    engine = make_engine([agent])
    state = engine.start("a", "sum")

    await engine.run(state)

    assert given == [{"total": 500}]
    assert state.error is not None
    assert state.error.code == "guardrail_tripped"


async def test_after_a_handoff_the_last_agent_s_output_guardrails_decide(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    def never(output: Any, ctx: RunContext) -> bool:
        return False

    def starts_with_ok(data: Any, ctx: RunContext) -> bool:
        return str(data).startswith("ok")

    billing = Agent(name="billing", model="m", output_guardrails=[starts_with_ok])
    # The triage agent's output guardrail would trip; its input one passes only the first input.
    triage = Agent(
        name="triage",
        model="m",
        handoffs=[billing],
        input_guardrails=[polite],
        output_guardrails=[never],
    )
    billing.input_guardrails = [broken]  # not the run's first agent: never asked
    fake.script("m", [call("transfer_to_billing"), text("ok, billed")])
    engine = make_engine([triage, billing])
    state = engine.start("triage", "bill me")

    result = await engine.run(state)

    assert state.status is RunStatus.COMPLETED
    assert [(c["name"], c["stage"]) for c in checked(result.events)] == [
        ("polite", "input"),
        ("starts_with_ok", "output"),
    ]


async def test_a_run_resumed_mid_output_check_checks_the_stored_answer_again(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    """An executor that dies while an output guardrail runs: the answer was stored before the
    check, so the next one checks it again without calling the model."""
    started = anyio.Event()

    async def slow_review(output: Any, ctx: RunContext) -> None:
        started.set()
        await anyio.sleep_forever()

    fake.script("m", [text("the answer")])
    engine = make_engine([Agent(name="a", model="m", output_guardrails=[slow_review])])
    state = engine.start("a", "go")
    recorder = Recorder()
    async with anyio.create_task_group() as group:
        group.start_soon(engine.run, state, recorder)
        await started.wait()
        group.cancel_scope.cancel()  # the process is gone mid-check
    stored, _ = recorder.checkpoints[-1]
    assert stored["held_output"] == {"value": "the answer"}

    def approves(output: Any, ctx: RunContext) -> None:
        assert output == "the answer"

    approves.__name__ = "slow_review"
    taken_over = make_engine([Agent(name="a", model="m", output_guardrails=[approves])])
    resumed = RunState.from_json(stored)
    result = await taken_over.run(resumed)

    assert resumed.status is RunStatus.COMPLETED
    assert resumed.final_output == "the answer"
    assert len(fake.requests_for("m")) == 1
    assert checked(result.events) == [
        {"name": "slow_review", "stage": "output", "result": "passed", "reason": None}
    ]


async def test_a_cancelled_run_asks_nobody_any_more(
    make_engine: EngineFactory, fake: FakeModel
) -> None:
    engine: Engine = make_engine([Agent(name="a", model="m", input_guardrails=[large_refund])])
    state = engine.start("a", "refund")
    await engine.run(state)

    engine.cancel(state)

    assert state.status is RunStatus.CANCELLED
    assert state.pending_approvals == []


def test_a_guardrail_needs_a_name_of_its_own() -> None:
    with pytest.raises(ValueError, match="a def, not a lambda"):
        Agent(name="a", input_guardrails=[lambda messages, ctx: None])
    with pytest.raises(ValueError, match="two output guardrails named 'short'"):
        Agent(name="a", output_guardrails=[short, short])
    with pytest.raises(TypeError, match="not callable"):
        Agent(name="a", input_guardrails=["polite"])  # type: ignore[list-item]
