"""Running a step's queued tool calls, concurrently or one after another."""

from __future__ import annotations

from typing import Any, Protocol

import anyio

from app.engine import calls, events
from app.engine.agent import Agent
from app.engine.context import RunContext
from app.engine.deps import TurnDeps
from app.engine.events import RunEvent
from app.engine.external import tool_table
from app.engine.state import CallStatus, RunState, ToolCall
from app.engine.tools import Tool


class Turn(Protocol):
    """What running calls needs of the turn they belong to (`app.engine.turn.Turn`)."""

    state: RunState
    deps: TurnDeps
    log: Any

    def context(self, call_id: str | None = None) -> RunContext: ...

    def emit(self, event: RunEvent) -> None: ...

    async def checkpoint(self) -> None: ...


async def run_queued_calls(turn: Turn) -> None:
    """Run every queued call of the open step, storing each start and each result.

    Concurrent calls are all marked started in one checkpoint before any runs; one after another,
    each is marked just before it runs, so a crash leaves only that one in doubt.
    """
    state = turn.state
    agent = turn.deps.agents.of_open_step(state)
    tools = tool_table(agent, state)
    parallel = agent.calls_in_parallel(state.config)
    fail_fast = state.config.tool_errors == "fail"
    queued = [call for call in state.current_calls if call.status is CallStatus.QUEUED]

    def doomed() -> bool:
        # With tool_errors="fail" one failure ends the run: start nothing more.
        return fail_fast and any(call.tool_failed for call in state.current_calls)

    if parallel and len(queued) > 1:
        if doomed():
            return
        for call in queued:
            _start(turn, call, agent)
        await turn.checkpoint()
        async with anyio.create_task_group() as group:
            for call in queued:
                group.start_soon(_execute, turn, call, tools[call.name])
        return
    for call in queued:
        if doomed():
            return
        _start(turn, call, agent)
        await turn.checkpoint()
        await _execute(turn, call, tools[call.name])


def _start(turn: Turn, call: ToolCall, agent: Agent) -> None:
    call.status = CallStatus.RUNNING
    turn.emit(events.tool_call_started(call, agent.name))


async def _execute(turn: Turn, call: ToolCall, tool: Tool) -> None:
    """Run one call; whatever the tool does, the call ends with a result text."""
    ctx = turn.context(call.call_id)
    log = turn.log.bind(call_id=call.call_id, tool=call.name)
    if turn.state.config.debug:
        log.info("tool_call.started", arguments=call.arguments)
    run_id = turn.state.run_id or ""
    with turn.deps.instruments.tool_call(run_id, call.name, call.call_id) as measure:
        try:
            result = await tool.invoke(call.arguments or {}, ctx)
        except Exception as exc:
            log.warning("tool_call.raised", exc_info=exc)
            calls.fail(call, calls.raised_output(call.name, exc))
        else:
            if isinstance(result, Agent):
                _hand_off(turn, call, result)
            else:
                call.status = CallStatus.COMPLETED
                call.output = calls.output_text(result)
        calls.limit_output(call, turn.deps.max_tool_output_bytes)
        measure.outcome = call.status.value
    if turn.state.config.debug:
        log.info("tool_call.completed", status=call.status.value, output=call.output)
    turn.emit(events.tool_call_completed(call))
    await turn.checkpoint()


def _hand_off(turn: Turn, call: ToolCall, target: Agent) -> None:
    if not turn.deps.agents.knows(target):
        # A stored run names its agent, so an agent no other process knows could not resume.
        calls.fail(call, f"Error: {target.name!r} is not a registered agent; no handoff happened.")
        return
    call.status = CallStatus.COMPLETED
    call.handoff_to = target.name
    call.output = f"Transferred to {target.name}."
