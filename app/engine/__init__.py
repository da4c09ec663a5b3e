"""The agent engine: agents, tools, model providers and the resumable turn loop.

It knows no HTTP and no database: the executor drives it and stores what it reports.
"""

from app.engine.agent import Agent
from app.engine.approvals import DecisionInput
from app.engine.config import RunConfig
from app.engine.context import RunContext
from app.engine.engine import Engine
from app.engine.errors import ModelError
from app.engine.events import RunEvent, RunObserver, TextDelta
from app.engine.guardrails import AskHuman, Guardrail, Tripwire
from app.engine.mcp import MCPServer
from app.engine.model import ModelProvider, ModelRequest, ModelResponse
from app.engine.outcomes import Completed, Failed, HandedOff, Paused, RunAgain, TurnResult
from app.engine.principal import Principal
from app.engine.providers import AnthropicProvider, ModelRouter, OpenAIProvider
from app.engine.state import ApprovalRequest, RunState, RunStatus, Usage
from app.engine.tools import Tool, tool

__all__ = [
    "Agent",
    "AnthropicProvider",
    "ApprovalRequest",
    "AskHuman",
    "Completed",
    "DecisionInput",
    "Engine",
    "Failed",
    "Guardrail",
    "HandedOff",
    "MCPServer",
    "ModelError",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "ModelRouter",
    "OpenAIProvider",
    "Paused",
    "Principal",
    "RunAgain",
    "RunConfig",
    "RunContext",
    "RunEvent",
    "RunObserver",
    "RunState",
    "RunStatus",
    "TextDelta",
    "Tool",
    "Tripwire",
    "TurnResult",
    "Usage",
    "tool",
]
