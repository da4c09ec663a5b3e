"""agent-runs: run LLM agents as durable REST resources.

The public Python surface for defining agents is `Agent`, `tool`, `RunContext` (with the
`Principal` a run acts for), a guardrail's verdicts `Tripwire` and `AskHuman`, `MCPServer` (an
MCP tool server) and, for a model backend of one's own, `ModelProvider`; `AnthropicProvider`
speaks Anthropic's own API (with the `anthropic` extra).
"""

from app.engine import (
    Agent,
    AnthropicProvider,
    ApprovalRequest,
    AskHuman,
    MCPServer,
    ModelError,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    Principal,
    RunContext,
    Tool,
    Tripwire,
    Usage,
    tool,
)

__all__ = [
    "Agent",
    "AnthropicProvider",
    "ApprovalRequest",
    "AskHuman",
    "MCPServer",
    "ModelError",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "Principal",
    "RunContext",
    "Tool",
    "Tripwire",
    "Usage",
    "tool",
]
