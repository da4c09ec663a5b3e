"""Agents: instructions, a model, tools and the agents they may hand off to."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.engine.config import RunConfig
from app.engine.context import RunContext
from app.engine.guardrails import Guardrail, check_guardrails
from app.engine.mcp import MCPServer, MCPTool
from app.engine.output import OutputSpec, output_spec
from app.engine.schema import function_schema
from app.engine.tools import Tool, as_tool, check_tool_name

if TYPE_CHECKING:
    from app.engine.state import ApprovalRequest, GuardrailStage

Instructions = str | Callable[[RunContext], str | Awaitable[str]]
"""A fixed text, or a sync or async function of the context, resolved every turn."""

HandlerVerdict = bool | tuple[bool, str | None] | None
"""`True` approves, `False` or `(False, reason)` rejects, `None` asks a human."""

ApprovalHandler = Callable[
    ["ApprovalRequest", RunContext], HandlerVerdict | Awaitable[HandlerVerdict]
]

HANDOFF_PREFIX = "transfer_to_"


@dataclass(eq=False)
class Agent:
    """An instruction-following model with tools, in the turn loop.

    `tools` may hold `@tool` objects or plain functions; `handoffs` are offered to the model as
    `transfer_to_<name>` tools. `model` is `"model"` (default provider) or `"provider/model"`.
    `output_type` (a pydantic model, a dataclass or a JSON Schema dict) makes the final answer
    of a run this agent ends a validated JSON value instead of text. `input_guardrails` check a
    run's input before its first model call (of runs this agent starts), `output_guardrails` the
    final answer before the run completes (of runs this agent ends).
    """

    name: str
    instructions: Instructions = ""
    model: str | None = None
    tools: Sequence[Tool | Callable[..., Any]] = field(default_factory=list)
    handoffs: Sequence[Agent] = field(default_factory=list)
    description: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    parallel_tool_calls: bool | None = None
    approval_handler: ApprovalHandler | None = None
    output_type: type | dict[str, Any] | None = None
    input_guardrails: Sequence[Guardrail] = field(default_factory=list)
    output_guardrails: Sequence[Guardrail] = field(default_factory=list)
    mcp_servers: Sequence[str | MCPServer] = field(default_factory=list)
    # The servers `mcp_servers` names, once the engine has given them (`bind_mcp_servers`).
    _mcp: list[MCPServer] = field(init=False, default_factory=list, repr=False)
    output: OutputSpec | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        check_tool_name(HANDOFF_PREFIX + self.name)
        # Built now, so a bad type or schema fails where the agent is defined, not in a run.
        self.output = None if self.output_type is None else output_spec(self.output_type)
        self.tools = [as_tool(candidate) for candidate in self.tools]
        self.handoffs = list(self.handoffs)
        self.input_guardrails = list(self.input_guardrails)
        self.output_guardrails = list(self.output_guardrails)
        check_guardrails(self.name, "input", self.input_guardrails)
        check_guardrails(self.name, "output", self.output_guardrails)
        self.mcp_servers = list(self.mcp_servers)
        self._mcp = [server for server in self.mcp_servers if isinstance(server, MCPServer)]
        self.tool_table()

    def tool_table(self, *, strict: bool = False) -> dict[str, Tool]:
        """Every tool the model may call this turn, by name: its own, the handoff tools, then
        its MCP servers' as they list them now.

        Built on each call because `handoffs` may be filled in after construction (two agents
        that hand off to each other) and servers change their lists; raises `ValueError` when
        two of its own tools share a name, and with `strict` (at start) when an MCP tool takes
        a name already taken. Later, such a tool is left out: a run goes on.
        """
        table: dict[str, Tool] = {}
        handoff_tools = [agent.handoff_tool for agent in self.handoffs]
        for tool in [*map(as_tool, self.tools), *handoff_tools]:
            if tool.name in table:
                raise ValueError(f"agent {self.name!r} has two tools named {tool.name!r}")
            table[tool.name] = tool
        for server in self._mcp:
            for name, mcp_tool in server.tools.items():
                if name not in table:
                    table[name] = mcp_tool
                elif strict:
                    raise ValueError(
                        f"agent {self.name!r} has two tools named {name!r}: "
                        f"{_origin(table[name])} and {_origin(mcp_tool)} (give the MCP server "
                        "a prefix, or a tools list without it)"
                    )
        return table

    def bind_mcp_servers(self, servers: Mapping[str, MCPServer]) -> list[MCPServer]:
        """Resolve `mcp_servers` names against the service's servers; raises `ValueError` for a
        name none has."""
        bound: list[MCPServer] = []
        for server in self.mcp_servers:
            if isinstance(server, MCPServer):
                bound.append(server)
                continue
            if server not in servers:
                known = ", ".join(sorted(servers)) or "none"
                raise ValueError(
                    f"agent {self.name!r} uses MCP server {server!r}, which is not defined "
                    f"(MCP_SERVERS has {known})"
                )
            bound.append(servers[server])
        self._mcp = bound
        return bound

    @functools.cached_property
    def handoff_tool(self) -> Tool:
        """The `transfer_to_<name>` tool that hands a run to this agent."""

        async def transfer() -> Agent:
            return self

        name = HANDOFF_PREFIX + self.name
        summary = f"Hand the conversation off to the {self.name} agent."
        description = f"{summary} {self.description}".strip()
        return Tool(
            name=name,
            function=transfer,
            schema=function_schema(transfer, name=name, description=description),
            effect="read",
        )

    @property
    def mcp(self) -> list[MCPServer]:
        """The MCP servers whose tools it offers."""
        return list(self._mcp)

    def guardrails(self, stage: GuardrailStage) -> list[Guardrail]:
        return list(self.input_guardrails if stage == "input" else self.output_guardrails)

    def calls_in_parallel(self, config: RunConfig) -> bool:
        """Whether this agent's tool calls of one turn run at once: unless the run's config or
        the agent says not to."""
        return config.parallel_tool_calls and self.parallel_tool_calls is not False

    async def resolve_instructions(self, ctx: RunContext) -> str:
        if isinstance(self.instructions, str):
            return self.instructions
        resolved = self.instructions(ctx)
        if isinstance(resolved, Awaitable):
            resolved = await resolved
        return str(resolved)


def _origin(tool: Tool) -> str:
    if isinstance(tool, MCPTool) and tool.server is not None:
        return f"the tool {tool.remote_name!r} of MCP server {tool.server.name!r}"
    return f"its own tool {tool.name!r}"
