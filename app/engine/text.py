"""Text every store and model API can carry.

A NUL character and a lone UTF-16 surrogate (half of a pair, which JSON's `\\ud800` escape can
spell) are valid in a Python string, yet PostgreSQL refuses the first, UTF-8 cannot encode the
second, and a model API refuses both. Clients are refused them at the door; what a model or a
tool produces has each one replaced with U+FFFD, so a run goes on with text it can store.
"""

from __future__ import annotations

import re
from typing import Any

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def storable_text(text: str) -> str:
    """`text` with every NUL and lone surrogate replaced by U+FFFD."""
    if UNSTORABLE.search(text) is None:
        return text
    return UNSTORABLE.sub(REPLACEMENT, text)


def storable_json(value: Any) -> Any:
    """A copy of a JSON value with the strings in it, keys too, made storable."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(key): storable_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable_json(item) for item in value]
    return value


def describe(character: str) -> str:
    """What an unstorable character is, for an error message."""
    if character == "\x00":
        return "a NUL character (U+0000)"
    return f"a lone UTF-16 surrogate (U+{ord(character):04X})"
