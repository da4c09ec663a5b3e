"""The engine's front door: start a run, advance it a turn at a time, decide, cancel."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio

from app.engine import calls
from app.engine.agent import Agent
from app.engine.approvals import DecisionInput, apply_decisions
from app.engine.config import RunConfig
from app.engine.deps import TurnDeps
from app.engine.errors import RunEnded, ToolClash
from app.engine.events import NullObserver, RunEvent, RunObserver
from app.engine.external import clashing_names
from app.engine.history import history_window
from app.engine.instruments import Instruments, NoInstruments
from app.engine.mcp import MCPServer
from app.engine.outcomes import TurnResult, goes_on
from app.engine.output import schema_spec
from app.engine.principal import ANONYMOUS, Principal
from app.engine.providers.router import ModelRouter
from app.engine.registry import AgentRegistry
from app.engine.state import Message, RunError, RunState, RunStatus, RunTool
from app.engine.turn import Turn, ensure_running


def input_messages(run_input: str | Sequence[Message]) -> list[Message]:
    """A string is one user message; a list is taken as Chat Completions messages."""
    if isinstance(run_input, str):
        return [{"role": "user", "content": run_input}]
    return [dict(message) for message in run_input]


DEFAULT_MAX_TOOL_OUTPUT_BYTES = 1024 * 1024


class Engine:
    """Runs agents turn by turn over a `RunState` that any process can store and continue.

    A tool's output longer than `max_tool_output_bytes` is cut there: every turn sends the
    whole conversation to the model, and the run stores it. `mcp_servers` are the servers agents
    name in their `mcp_servers`; `connect` connects them (and every server an agent holds).
    """

    def __init__(
        self,
        agents: Iterable[Agent],
        models: ModelRouter,
        *,
        instruments: Instruments | None = None,
        max_tool_output_bytes: int = DEFAULT_MAX_TOOL_OUTPUT_BYTES,
        mcp_servers: Mapping[str, MCPServer] | None = None,
    ) -> None:
        self.agents = AgentRegistry(agents)
        self.mcp_servers = _bind_mcp_servers(self.agents, mcp_servers or {})
        self._connections = AsyncExitStack()
        self.models = models
        self.instruments: Instruments = instruments or NoInstruments()
        self.max_tool_output_bytes = max_tool_output_bytes
        self._deps = TurnDeps(self.agents, models, self.instruments, max_tool_output_bytes)

    def start(
        self,
        agent: str,
        run_input: str | Sequence[Message],
        *,
        history: Sequence[Message] = (),
        history_from: int = 0,
        config: RunConfig | None = None,
        variables: dict[str, Any] | None = None,
        run_id: str | None = None,
        session_id: str | None = None,
        output_schema: dict[str, Any] | None = None,
        tools: Sequence[RunTool] = (),
    ) -> RunState:
        """A new run's state; raises `UnknownAgent`, or `InvalidSchema` for a bad
        `output_schema` (the run's final answer, in place of its agents' output types).
        `history` is a session's conversation, or its newest messages from place
        `history_from` on; the run keeps of it what `config.max_history_messages` lets the
        model see. `tools` are the run's own tools, which the client runs (see
        `check_run_tools`)."""
        self.agents.get(agent)
        if output_schema is not None:
            schema_spec(output_schema)
        config = config or RunConfig()
        start = history_window(history, config.max_history_messages)
        return RunState(
            agent=agent,
            current_agent=agent,
            config=config,
            messages=[*(dict(m) for m in history[start:]), *input_messages(run_input)],
            history_length=len(history) - start,
            history_from=history_from + start,
            variables=dict(variables or {}),
            run_id=run_id,
            session_id=session_id,
            output_schema=output_schema,
            tools=list(tools),
        )

    def check_run_tools(self, tools: Sequence[RunTool]) -> None:
        """Refuse a run's own tools whose names some agent's tool has (`ToolClash`): a call
        would be ambiguous in whichever agent the run reaches."""
        clashes = clashing_names((spec.name for spec in tools), self.agents)
        if clashes:
            raise ToolClash(f"an agent already has a tool named {', '.join(map(repr, clashes))}")

    async def advance(
        self,
        state: RunState,
        observer: RunObserver | None = None,
        *,
        principal: Principal = ANONYMOUS,
    ) -> TurnResult:
        """Run one turn (or the rest of an open one) and return how it ended. `principal` (who
        the run acts for) reaches tools, instructions and handlers in their `RunContext`.

        `state` is updated in place; cancelling the calling task abandons the turn, after which
        `cancel` closes the run.
        """
        ensure_running(state)
        turn = Turn(self._deps, state, observer or NullObserver(), principal)
        outcome = await turn.run()
        return TurnResult(state, outcome, turn.events)

    async def run(
        self,
        state: RunState,
        observer: RunObserver | None = None,
        *,
        principal: Principal = ANONYMOUS,
    ) -> TurnResult:
        """Advance until the run rests: completed, failed or pending approval."""
        events: list[RunEvent] = []
        while True:
            result = await self.advance(state, observer, principal=principal)
            events += result.events
            if not goes_on(result.outcome):
                return TurnResult(state, result.outcome, events)

    def decide(
        self, state: RunState, decisions: Sequence[DecisionInput], *, decided_by: str | None = None
    ) -> list[RunEvent]:
        """Apply decisions on pending calls; once none is pending the run is running again.

        Raises `RunEnded`, `RunNotPending`, `UnknownCall`, `CallAlreadyDecided` or
        `InvalidDecision`, and then changes nothing.
        """
        return apply_decisions(
            state, self.agents, decisions, decided_by, self.max_tool_output_bytes
        )

    async def connect(self) -> None:
        """Connect the MCP servers, at once (one that cannot be reached is unavailable until a
        call reaches it), then refuse an agent whose tools share a name (`ValueError`). Call it
        and `aclose` from one task."""
        for server in self.mcp_servers.values():
            await self._connections.enter_async_context(server)
        async with anyio.create_task_group() as group:
            for server in self.mcp_servers.values():
                group.start_soon(server.connect)
        for agent in self.agents:
            agent.tool_table(strict=True)

    async def aclose(self) -> None:
        """Close the MCP servers' and the model providers' connections."""
        await self._connections.aclose()
        await self.models.aclose()

    def cancel(self, state: RunState) -> list[RunEvent]:
        """End the run as cancelled; calls without a result end cancelled, with a result text."""
        if state.status.ended:
            raise RunEnded(f"the run has ended ({state.status.value})")
        emitted = calls.close_step(state) if state.open_step else []
        state.status = RunStatus.CANCELLED
        calls.end_guardrail_waits(state)
        return emitted

    def fail(self, state: RunState, error: RunError) -> list[RunEvent]:
        """End the run as failed from outside the loop (the executor's own failure)."""
        if state.status.ended:
            raise RunEnded(f"the run has ended ({state.status.value})")
        return calls.fail_run(state, error)


def _bind_mcp_servers(
    agents: AgentRegistry, defined: Mapping[str, MCPServer]
) -> dict[str, MCPServer]:
    """Every server the engine connects, by name: the defined ones and those agents hold."""
    servers = dict(defined)
    for agent in agents:
        for server in agent.bind_mcp_servers(defined):
            if servers.setdefault(server.name, server) is not server:
                raise ValueError(f"two different MCP servers are named {server.name!r}")
    return servers
