"""Model backends: the OpenAI-compatible provider and the router that picks one per model."""

from app.engine.providers.openai import OpenAIProvider
from app.engine.providers.router import ModelRouter

__all__ = ["ModelRouter", "OpenAIProvider"]
