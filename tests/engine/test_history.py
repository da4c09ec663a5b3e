"""The history window of `max_history_messages`: the newest messages, never a tool result
without the assistant message that asked for it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.engine import Agent, RunConfig
from app.engine.history import history_window
from app.engine.state import Message
from tests.engine.conftest import EngineFactory

Conversation = list[Message]


def question(n: int) -> Message:
    return {"role": "user", "content": f"question {n}"}


def answer(n: int) -> Message:
    return {"role": "assistant", "content": f"answer {n}"}


def asking(n: int, calls: int) -> Conversation:
    """An answer asking `calls` tool calls, then their results."""
    ids = [f"call_{n}_{i}" for i in range(calls)]
    ask = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": id_, "type": "function", "function": {"name": "add", "arguments": "{}"}}
            for id_ in ids
        ],
    }
    return [ask, *({"role": "tool", "tool_call_id": id_, "content": "3"} for id_ in ids)]


@st.composite
def conversations(draw: st.DrawFn) -> Conversation:
    """Valid Chat Completions conversations, as sessions store them: questions, answers, and
    answers asking tool calls followed by every result."""
    kinds = draw(st.lists(st.sampled_from(["user", "answer", "calls"]), max_size=30))
    messages: Conversation = []
    for n, kind in enumerate(kinds):
        if kind == "user":
            messages.append(question(n))
        elif kind == "answer":
            messages.append(answer(n))
        else:
            messages += asking(n, draw(st.integers(1, 3)))
    return messages


def orphans(window: Conversation) -> list[Any]:
    """The tool results in `window` whose asking answer is not before them in it."""
    asked: set[Any] = set()
    found = []
    for message in window:
        asked |= {call["id"] for call in message.get("tool_calls") or []}
        if message["role"] == "tool" and message["tool_call_id"] not in asked:
            found.append(message["tool_call_id"])
    return found


def unanswered(window: Conversation) -> set[Any]:
    asked = {call["id"] for m in window for call in m.get("tool_calls") or []}
    return asked - {m["tool_call_id"] for m in window if m["role"] == "tool"}


@given(conversations(), st.none() | st.integers(0, 40))
@example([question(0), *asking(1, 2), answer(2)], 3)  # would start at the second result
@example([*asking(0, 3), answer(1)], 4)  # the whole turn just fits
@example(asking(0, 1), 0)
def test_the_window_is_the_longest_valid_suffix_within_the_limit(
    history: Conversation, limit: int | None
) -> None:
    start = history_window(history, limit)
    window = history[start:]

    assert 0 <= start <= len(history)
    if limit is None:
        assert window == history
    else:
        assert len(window) <= limit
    assert orphans(window) == []
    assert unanswered(window) == set()
    assert not window or window[0]["role"] != "tool"
    # Every longer suffix within the limit would have held a tool result without its ask.
    longest = 0 if limit is None else max(len(history) - limit, 0)
    assert all(orphans(history[s:]) for s in range(longest, start))


@pytest.mark.parametrize(
    ("limit", "start"),
    [(None, 0), (0, 6), (1, 5), (2, 4), (3, 4), (4, 4), (5, 1), (6, 0), (7, 0)],
)
def test_a_cut_inside_a_turn_moves_past_its_tool_results(limit: int | None, start: int) -> None:
    history = [question(0), *asking(1, 2), answer(2), question(3)]  # 6: 2 and 3 are results

    assert history_window(history, limit) == start


@pytest.mark.anyio
async def test_a_run_keeps_of_its_history_what_its_model_may_see(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine([Agent(name="a", instructions="Hi.")])
    history = [question(0), *asking(1, 2), answer(2)]

    state = engine.start(
        "a",
        "next",
        history=history,
        history_from=100,
        config=RunConfig(max_history_messages=2),
    )

    assert state.messages == [answer(2), {"role": "user", "content": "next"}]
    assert state.history_length == 1
    assert state.history_from == 104
    assert state.new_messages == [{"role": "user", "content": "next"}]
