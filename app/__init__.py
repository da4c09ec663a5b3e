"""agent-runs: run LLM agents as durable REST resources.

The public Python surface for defining agents is `Agent`, `tool`, `RunContext` and, for a model
backend of one's own, `ModelProvider`.
"""

from app.engine import (
    Agent,
    ApprovalRequest,
    ModelError,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    RunContext,
    Tool,
    Usage,
    tool,
)

__all__ = [
    "Agent",
    "ApprovalRequest",
    "ModelError",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "RunContext",
    "Tool",
    "Usage",
    "tool",
]
