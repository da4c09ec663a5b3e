"""One turn of the loop: a model call and the tool calls it asks for, or the rest of an open one."""

from __future__ import annotations

import threading
import time
from types import MappingProxyType
from typing import assert_never

import anyio
import pydantic
import structlog

from app.engine import calls, events
from app.engine.agent import Agent
from app.engine.answers import final_answer
from app.engine.approvals import ask_handler, record_decision
from app.engine.context import RunContext
from app.engine.deps import TurnDeps
from app.engine.errors import EngineError, ModelError
from app.engine.events import RunEvent, RunObserver, TextDelta
from app.engine.execution import run_queued_calls
from app.engine.external import tool_table
from app.engine.guardrails import asked, rejected_error, run_guardrails
from app.engine.model import ModelRequest, ModelResponse, unusable
from app.engine.outcomes import (
    Completed,
    Failed,
    HandedOff,
    Paused,
    RunAgain,
    TurnOutcome,
    outcome_name,
)
from app.engine.output import OutputSpec, schema_spec
from app.engine.principal import Principal
from app.engine.state import (
    ApprovalRequest,
    CallStatus,
    GuardrailStage,
    HeldOutput,
    RunError,
    RunState,
    RunStatus,
    StepRecord,
    ToolCall,
)
from app.engine.text import storable_json
from app.engine.tools import Tool

log = structlog.get_logger("app.engine")


class Turn:
    """Drives one `Engine.advance`: owns the turn's events, checkpoints and cancellation."""

    def __init__(
        self, deps: TurnDeps, state: RunState, observer: RunObserver, principal: Principal
    ) -> None:
        self.deps = deps
        self.state = state
        self.principal = principal
        self.observer = observer
        self.events: list[RunEvent] = []
        self._unsaved: list[RunEvent] = []
        self._checkpoint_lock = anyio.Lock()
        self._cancel_event = threading.Event()
        self._variables = MappingProxyType(state.variables)
        self.log = log.bind(run_id=state.run_id)

    async def run(self) -> TurnOutcome:
        state = self.state
        started = time.perf_counter()
        remaining = state.config.timeout_seconds - state.elapsed_ms / 1000
        run_id = state.run_id or ""
        try:
            with (
                self.deps.instruments.turn(run_id, state.turns + 1, state.current_agent) as turn,
                anyio.fail_after(remaining if remaining > 0 else 0),
            ):
                outcome = await self._advance()
                turn.outcome = outcome_name(outcome)
        except TimeoutError:
            limit = state.config.timeout_seconds
            outcome = Failed(RunError("timeout", f"the run used its {limit:g} s of execution time"))
        finally:
            # Whatever still runs in a thread (an abandoned sync tool) should now stop.
            self._cancel_event.set()
            elapsed_ms = (time.perf_counter() - started) * 1000
            state.elapsed_ms += elapsed_ms
            if state.steps:
                state.steps[-1].duration_ms += elapsed_ms
        await self._conclude(outcome)
        return outcome

    def context(self, call_id: str | None = None) -> RunContext:
        state = self.state
        return RunContext(
            self._variables,
            state.run_id,
            state.session_id,
            call_id,
            self._cancel_event,
            self.principal,
        )

    def emit(self, event: RunEvent) -> None:
        self.events.append(event)
        self._unsaved.append(event)

    def _emit_all(self, emitted: list[RunEvent]) -> None:
        for event in emitted:
            self.emit(event)

    async def checkpoint(self) -> None:
        """Hand the state and the events since the last checkpoint to the observer."""
        with anyio.CancelScope(shield=True):
            async with self._checkpoint_lock:
                unsaved, self._unsaved = self._unsaved, []
                await self.observer.checkpoint(self.state, unsaved)

    async def _advance(self) -> TurnOutcome:
        state = self.state
        if not state.open_step:
            if state.held_output is not None:
                return await self._check_output()
            if state.turns == 0:
                starter = self.deps.agents.get(state.agent)
                checked = await self._guard("input", starter, state.new_messages)
                if checked is not None:
                    return checked
            if state.turns >= state.config.max_turns:
                limit = state.config.max_turns
                return Failed(RunError("max_turns_exceeded", f"the run reached {limit} turns"))
            outcome = await self._model_turn()
            if outcome is not None:
                return outcome
        else:
            self._recover_interrupted_calls()
        return await self._finish_tool_calls()

    async def _model_turn(self) -> TurnOutcome | None:
        """Call the model; a text answer completes the run, tool calls open a step (None)."""
        state = self.state
        agent = self.deps.agents.get(state.current_agent)
        state.turns += 1
        self.log = self.log.bind(turn=state.turns, agent=agent.name)
        try:
            instructions = await agent.resolve_instructions(self.context())
        except Exception as exc:
            self.log.exception("instructions.failed")
            message = f"the instructions of agent {agent.name!r} raised {type(exc).__name__}: {exc}"
            return Failed(RunError("internal_error", message))
        tools = tool_table(agent, state)
        spec = self._output_spec(agent)
        try:
            response, tool_mode = await self._call_model(agent, instructions, tools, spec)
        except ModelError as exc:
            self.log.warning("model.failed", error=str(exc))
            return Failed(RunError("model_error", str(exc)))
        state.usage.add(response.usage)
        assistant = storable_json(response.message)
        state.messages.append(assistant)
        state.steps.append(StepRecord(agent=agent.name))
        self.emit(events.message(assistant))
        raw_calls = calls.with_unique_ids(assistant.get("tool_calls") or [], state.turns)
        if spec is not None:
            answer = final_answer(state, spec, assistant, raw_calls, tool=tool_mode)
            if answer is not None:
                outcome, emitted = answer
                self._emit_all(emitted)
                if isinstance(outcome, Completed):
                    return await self._answer(agent, outcome.output)
                return outcome
        elif not raw_calls:
            return await self._answer(agent, assistant.get("content") or "")
        state.open_step = True
        for raw_call in raw_calls:
            await self._plan_call(agent, tools, calls.parse_call(raw_call))
        return None

    async def _answer(self, agent: Agent, output: object) -> TurnOutcome:
        """The final answer completes the run, once the agent's output guardrails let it."""
        if not agent.output_guardrails:
            return Completed(output)
        self.state.held_output = HeldOutput(output)
        # Stored before the checks: a run taken over while one is in flight checks this answer
        # again rather than paying the model for another.
        await self.checkpoint()
        return await self._check_output()

    async def _check_output(self) -> TurnOutcome:
        state = self.state
        held = state.held_output
        assert held is not None
        agent = self.deps.agents.get(state.current_agent)
        checked = await self._guard("output", agent, held.value)
        if checked is not None:
            return checked
        state.held_output = None
        return Completed(held.value)

    async def _guard(self, stage: GuardrailStage, agent: Agent, data: object) -> TurnOutcome | None:
        """Run the stage's guardrails: None when they all pass (or a person approved each ask),
        else the run fails or rests for a person."""
        state = self.state
        decided = [ask for ask in state.guardrail_asks if ask.stage == stage]
        if decided:
            # The run runs again only once a person answered every ask of the stage.
            state.guardrail_asks = []
            rejected = next((ask for ask in decided if not ask.approved), None)
            if rejected is None:
                return None
            decision = next(
                (d for d in reversed(state.decisions) if d.call_id == rejected.item_id), None
            )
            return Failed(rejected_error(rejected, decision))
        guardrails = agent.guardrails(stage)
        if not guardrails:
            return None
        checks = await run_guardrails(guardrails, stage, data, self.context())
        for check in checks:
            self.emit(check.event())
        tripped = next((check for check in checks if check.result == "tripped"), None)
        if tripped is not None:
            self.log.info("guardrail.tripped", guardrail=tripped.name, stage=stage)
            return Failed(tripped.error())
        state.guardrail_asks = asked(checks, agent.name)
        if not state.guardrail_asks:
            return None
        pending = state.pending_approvals
        for request in pending:
            self.emit(events.approval_requested(request))
        return Paused(pending)

    def _output_spec(self, agent: Agent) -> OutputSpec | None:
        """The run's own schema, else the type of the agent taking the turn (after a handoff,
        the agent that answers last decides)."""
        if self.state.output_schema is not None:
            return schema_spec(self.state.output_schema)
        return agent.output

    async def _call_model(
        self, agent: Agent, instructions: str, tools: dict[str, Tool], spec: OutputSpec | None
    ) -> tuple[ModelResponse, bool]:
        """The model's answer, and whether a structured answer was asked as a tool call."""
        state, config = self.state, self.state.config
        provider, model = self.deps.models.resolve(agent.model)
        system = [{"role": "system", "content": instructions}] if instructions else []
        parallel = agent.calls_in_parallel(config)
        tool_mode = spec is not None and provider.structured_output == "tool"
        specs = [tool.spec for tool in tools.values()]
        if spec is not None and tool_mode:
            specs.append(spec.tool_spec())
        request = ModelRequest(
            model=model,
            messages=[*system, *state.messages],
            tools=specs,
            temperature=agent.temperature if config.temperature is None else config.temperature,
            max_tokens=agent.max_tokens if config.max_tokens is None else config.max_tokens,
            parallel_tool_calls=parallel,
            response_format=spec.response_format() if spec and not tool_mode else None,
        )
        if config.debug:
            self.log.info("model.request", model=agent.model, request=request)
        turn = state.turns

        async def on_text(text: str) -> None:
            await self.observer.on_delta(TextDelta(turn, text))

        try:
            with self.deps.instruments.model_call(state.run_id or "", model):
                response = await provider.complete(request, on_text)
        except ModelError:
            raise
        except Exception as exc:
            # A provider of the user's own may raise anything; the run fails, the service lives.
            self.log.exception("model.provider_crashed")
            raise ModelError(f"model {model!r}: {type(exc).__name__}: {exc}") from exc
        if config.debug:
            self.log.info("model.response", message=response.message, usage=response.usage)
        if (problem := unusable(response)) is not None:
            state.usage.add(response.usage)  # spent all the same
            raise ModelError(f"model {model!r}: {problem}")
        return response, tool_mode

    async def _plan_call(self, agent: Agent, tools: dict[str, Tool], call: ToolCall) -> None:
        """Add the call to the step: failed at once, queued, decided, or awaiting a human."""
        self.state.steps[-1].tool_calls.append(call)
        if call.status is CallStatus.FAILED:
            self._emit_failed_early(call, agent)
            return
        tool = tools.get(call.name)
        if tool is None:
            calls.fail(call, calls.unknown_tool_output(call.name, tools))
            self._emit_failed_early(call, agent)
            return
        arguments = call.arguments or {}
        try:
            tool.schema.validate(arguments)
        except pydantic.ValidationError as exc:
            calls.fail(call, calls.invalid_arguments_output(call.name, exc))
            self._emit_failed_early(call, agent)
            return
        if tool.external:
            # Neither a handler nor a remembered approval can supply what only the client has.
            call.external = True
            call.status = CallStatus.AWAITING_APPROVAL
            self.emit(events.approval_requested(self._request(call)))
            return
        ctx = self.context(call.call_id)
        if not self._requires_approval(tool, arguments, ctx):
            return
        if tool.name in self.state.remembered_tools:
            self._emit_all(
                record_decision(self.state, call, approved=True, reason=None, source="remember")
            )
            return
        call.status = CallStatus.AWAITING_APPROVAL
        request = self._request(call)
        verdict = await ask_handler(agent, request, ctx)
        if verdict is None:
            self.emit(events.approval_requested(request))
            return
        approved, reason = verdict if isinstance(verdict, tuple) else (verdict, None)
        self._emit_all(
            record_decision(self.state, call, approved=approved, reason=reason, source="handler")
        )

    def _request(self, call: ToolCall) -> ApprovalRequest:
        return next(p for p in self.state.pending_approvals if p.call_id == call.call_id)

    def _requires_approval(self, tool: Tool, arguments: dict[str, object], ctx: RunContext) -> bool:
        try:
            return tool.requires_approval(dict(arguments), ctx)
        except Exception:
            # When the rule cannot say, a human decides: never run an unapproved call.
            self.log.exception("needs_approval.failed", tool=tool.name, call_id=ctx.call_id)
            return True

    def _emit_failed_early(self, call: ToolCall, agent: Agent) -> None:
        self.log.warning("tool_call.invalid", call_id=call.call_id, tool=call.name)
        self.emit(events.tool_call_started(call, agent.name))
        self.emit(events.tool_call_completed(call))

    def _recover_interrupted_calls(self) -> None:
        """A call started before a crash is repeated only when repeating it is safe."""
        agent = self.deps.agents.of_open_step(self.state)
        tools = tool_table(agent, self.state)
        for call in self.state.current_calls:
            if call.status is not CallStatus.RUNNING:
                continue
            tool = tools.get(call.name)
            if tool is not None and tool.effect in ("read", "idempotent"):
                call.status = CallStatus.QUEUED
                continue
            call.status = CallStatus.AWAITING_APPROVAL
            call.in_doubt = True
            self.emit(events.approval_requested(self._request(call)))

    async def _finish_tool_calls(self) -> TurnOutcome:
        await run_queued_calls(self)
        state = self.state
        failed = next((call for call in state.current_calls if call.tool_failed), None)
        if failed is not None and state.config.tool_errors == "fail":
            message = f"tool call {failed.call_id} ({failed.name}) failed: {failed.output}"
            return Failed(RunError("tool_error", message))
        pending = state.pending_approvals
        if pending:
            return Paused(pending)
        return self._close_step()

    def _close_step(self) -> TurnOutcome:
        state = self.state
        winner: str | None = None
        for call in state.current_calls:
            if call.handoff_to is None:
                continue
            if winner is None:
                winner = call.handoff_to
                continue
            call.status = CallStatus.FAILED
            call.output = f"Not transferred to {call.handoff_to}: this turn hands off to {winner}."
            self.emit(events.tool_call_completed(call))
        self._emit_all(calls.close_step(state))
        if winner is None or winner == state.current_agent:
            return RunAgain()
        previous, state.current_agent = state.current_agent, winner
        self.emit(events.agent_changed(previous, winner))
        return HandedOff(previous, winner)

    async def _conclude(self, outcome: TurnOutcome) -> None:
        state = self.state
        match outcome:
            case RunAgain() | HandedOff():
                pass
            case Completed(output=output):
                state.status = RunStatus.COMPLETED
                state.final_output = output
            case Paused():
                state.status = RunStatus.PENDING_APPROVAL
            case Failed(error=error):
                self._emit_all(calls.fail_run(state, error))
            case _:
                assert_never(outcome)
        await self.checkpoint()


def ensure_running(state: RunState) -> None:
    if state.status is not RunStatus.RUNNING:
        raise EngineError(f"the run is {state.status.value}; only a running run can advance")
