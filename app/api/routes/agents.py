"""`/agents`: the registered agents, their tools and handoffs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api import pagination
from app.api.deps import ServicesDep, problems
from app.api.errors import ApiError
from app.api.schemas import AgentOut, AgentPage, MCPServerOut, ToolOut
from app.engine import Agent
from app.engine.errors import UnknownAgent
from app.engine.guardrails import guardrail_name
from app.engine.mcp import MCPTool

router = APIRouter(prefix="/agents", tags=["agents"])


@router.get("", responses=problems(422))
async def list_agents(
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> AgentPage:
    """Registered agents, by name."""
    after = pagination.decode(cursor, "name", str)
    names = sorted(agent.name for agent in services.engine.agents)
    remaining = [name for name in names if after is None or name > after]
    page = remaining[:limit]
    next_cursor = pagination.encode({"name": page[-1]}) if len(remaining) > limit else None
    default_model = services.settings.default_model
    items = [_agent_out(services.engine.agents.get(name), default_model) for name in page]
    return AgentPage(items=items, next_cursor=next_cursor)


@router.get("/{name}", responses=problems(404, 422))
async def get_agent(name: str, services: ServicesDep) -> AgentOut:
    """One agent."""
    try:
        agent = services.engine.agents.get(name)
    except UnknownAgent as exc:
        raise ApiError(404, str(exc)) from exc
    return _agent_out(agent, services.settings.default_model)


def _agent_out(agent: Agent, default_model: str) -> AgentOut:
    return AgentOut(
        name=agent.name,
        description=agent.description,
        model=agent.model or default_model,
        tools=[
            ToolOut(
                name=tool.name,
                description=tool.description,
                parameters=tool.schema.json_schema,
                effect=tool.effect,
                needs_approval=tool.approval_mode,
                external=tool.external,
                server=tool.server.name if isinstance(tool, MCPTool) and tool.server else None,
            )
            for tool in agent.tool_table().values()
        ],
        mcp_servers=[
            MCPServerOut(
                name=server.name,
                transport=server.transport,
                status="available" if server.available else "unavailable",
                error=None if server.available else server.error,
            )
            for server in agent.mcp
        ],
        handoffs=[target.name for target in agent.handoffs],
        output_schema=agent.output.schema if agent.output else None,
        input_guardrails=[guardrail_name(g) for g in agent.input_guardrails],
        output_guardrails=[guardrail_name(g) for g in agent.output_guardrails],
    )
