"""The agents a service knows, by name, so a stored run can find its agent in any process."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from app.engine.agent import Agent
from app.engine.errors import UnknownAgent
from app.engine.state import RunState


class AgentRegistry:
    """The given agents and every agent reachable from them through handoffs."""

    def __init__(self, agents: Iterable[Agent]) -> None:
        self._agents: dict[str, Agent] = {}
        pending = list(agents)
        while pending:
            agent = pending.pop()
            known = self._agents.get(agent.name)
            if known is agent:
                continue
            if known is not None:
                raise ValueError(f"two different agents are named {agent.name!r}")
            agent.tool_table()  # refuse clashing tool names at start, not mid-run
            self._agents[agent.name] = agent
            pending.extend(agent.handoffs)

    def get(self, name: str) -> Agent:
        try:
            return self._agents[name]
        except KeyError:
            known = ", ".join(sorted(self._agents)) or "none"
            raise UnknownAgent(f"no agent is named {name!r} (known: {known})") from None

    def of_open_step(self, state: RunState) -> Agent:
        """The agent whose turn the open step is (a handoff in it changes `current_agent`, not
        whose calls they are)."""
        return self.get(state.steps[-1].agent)

    def knows(self, agent: Agent) -> bool:
        return self._agents.get(agent.name) is agent

    def __iter__(self) -> Iterator[Agent]:
        return iter(self._agents.values())

    def __len__(self) -> int:
        return len(self._agents)
