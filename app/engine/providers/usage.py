"""Token counts as each server reports them, read into one `Usage`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.engine.state import Usage


def read_usage(raw: Mapping[str, Any]) -> Usage:
    """One model call's usage from OpenAI's shape, DeepSeek's cache counts or Anthropic's names.

    Servers that stream usage on every chunk send running totals, so the caller keeps the last
    one read, never a sum.
    """
    prompt = _count(raw, "prompt_tokens") or _count(raw, "input_tokens")
    completion = _count(raw, "completion_tokens") or _count(raw, "output_tokens")
    cached = (
        _count(raw.get("prompt_tokens_details"), "cached_tokens")
        or _count(raw, "prompt_cache_hit_tokens")  # DeepSeek
        or _count(raw, "cache_read_input_tokens")
    )
    reasoning = _count(raw.get("completion_tokens_details"), "reasoning_tokens") or _count(
        raw.get("output_tokens_details"), "reasoning_tokens"
    )
    total = _count(raw, "total_tokens") or prompt + completion
    return Usage(1, prompt, completion, total, cached, reasoning)


def chunk_usage(chunk: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The usage a chunk or completion carries: at the top, or under Groq's `x_groq`."""
    usage = chunk.get("usage")
    if isinstance(usage, Mapping):
        return usage
    groq = chunk.get("x_groq")
    if isinstance(groq, Mapping) and isinstance(groq.get("usage"), Mapping):
        return groq["usage"]  # type: ignore[no-any-return]
    return None


def _count(raw: object, key: str) -> int:
    value = raw.get(key) if isinstance(raw, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
