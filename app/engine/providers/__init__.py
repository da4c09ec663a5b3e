"""Model backends: the OpenAI-compatible provider, Anthropic's, and the router that picks one."""

from app.engine.providers.anthropic import AnthropicProvider
from app.engine.providers.openai import OpenAIProvider
from app.engine.providers.router import ModelRouter

__all__ = ["AnthropicProvider", "ModelRouter", "OpenAIProvider"]
