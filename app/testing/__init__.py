"""A scripted OpenAI-compatible model for testing agents without a real LLM."""

from app.testing.dialects import DIALECTS, Dialect
from app.testing.fake_model import FakeModel
from app.testing.script import (
    FakeError,
    FakeToolCall,
    Reply,
    Rule,
    Script,
    call,
    calls,
    error,
    load_scripts,
    text,
)
from app.testing.server import FakeModelServer

__all__ = [
    "DIALECTS",
    "Dialect",
    "FakeError",
    "FakeModel",
    "FakeModelServer",
    "FakeToolCall",
    "Reply",
    "Rule",
    "Script",
    "call",
    "calls",
    "error",
    "load_scripts",
    "text",
]
