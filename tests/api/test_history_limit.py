"""`config.max_history_messages`: a run's model sees only its session's newest messages, cut at
a turn's edge, while the session keeps them all and the run says which it was sent."""

from __future__ import annotations

from typing import Any

import pytest

from app.testing import FakeModel, calls, text
from tests.api.conftest import Client

pytestmark = pytest.mark.anyio

RUNS = 4
PER_RUN = 5  # the question, an answer asking two calls, their two results, the last answer


async def create(client: Client, **body: Any) -> dict[str, Any]:
    response = await client.post("/runs", params={"wait": 10}, json={"agent": "calc", **body})
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    assert run["status"] == "completed", run
    return run


async def session_of_turns(client: Client, fake: FakeModel) -> list[dict[str, Any]]:
    """A session of `RUNS` runs, each a turn of two tool calls and an answer: the messages at
    places 5k+2 and 5k+3 are tool results that need the answer at 5k+1."""
    fake.script("m", [calls(("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})), text("done")])
    for i in range(RUNS):
        await create(client, input=f"question {i}", session_id="s1")
    session = (await client.get("/sessions/s1")).json()
    messages: list[dict[str, Any]] = session["messages"]
    assert [m["role"] for m in messages[:PER_RUN]] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]
    assert len(messages) == RUNS * PER_RUN
    return messages


@pytest.mark.parametrize(
    ("limit", "first"),
    [
        (None, 0),  # all
        (0, 20),  # none
        (5, 15),  # a whole run's turn
        (7, 14),  # would start at the second tool result of run 2: past both, to its answer
        (8, 14),  # would start at the first of them
        (9, 11),  # the answer that asked for them, with both
        (100, 0),  # more than there are
    ],
)
async def test_the_model_sees_the_newest_messages_from_a_turn_s_edge(
    client: Client, fake: FakeModel, limit: int | None, first: int
) -> None:
    stored = await session_of_turns(client, fake)
    fake.script("m", [text("the last answer")])

    run = await create(
        client, input="last question", session_id="s1", config={"max_history_messages": limit}
    )

    sent = stored[first:]
    request = fake.requests_for("m")[-1]["messages"]
    assert request[0]["role"] == "system"
    assert request[1:] == [*sent, {"role": "user", "content": "last question"}]
    assert run["config"]["max_history_messages"] == limit
    assert run["history"] == {"stored": len(stored), "sent": len(sent), "first_position": first}
    new = [{"role": "user", "content": "last question"}, run["messages"][-1]]
    assert run["messages"] == [*sent, *new]
    assert (await client.get(f"/runs/{run['id']}")).json() == run
    # The session keeps every message, the held-back ones too.
    session = (await client.get("/sessions/s1")).json()
    assert session["messages"] == [*stored, *new]


async def test_a_run_s_history_is_read_back_from_its_session_window(
    client: Client, fake: FakeModel
) -> None:
    """Runs of one session, each with its own window, listed together: each reads back its
    own slice of the session, not another's."""
    stored = await session_of_turns(client, fake)
    fake.script("m", [text("ok")])
    narrow = await create(
        client, input="narrow", session_id="s1", config={"max_history_messages": 4}
    )
    wide = await create(client, input="wide", session_id="s1", config={"max_history_messages": 11})

    listed = (await client.get("/runs", params={"session_id": "s1", "limit": 2})).json()["items"]

    assert [r["id"] for r in listed] == [wide["id"], narrow["id"]]
    assert listed[1]["messages"][:4] == stored[16:]
    assert listed[1]["history"] == {"stored": 20, "sent": 4, "first_position": 16}
    assert listed[0]["messages"][:11] == [*stored[11:], *narrow["messages"][4:]]
    assert listed[0]["history"] == {"stored": 22, "sent": 11, "first_position": 11}


async def test_a_run_without_a_session_shows_no_history_and_an_empty_session_none_sent(
    client: Client, fake: FakeModel
) -> None:
    fake.script("m", [text("hello")])

    alone = await create(client, input="hi", config={"max_history_messages": 2})
    first = await create(client, input="hi", session_id="new", config={"max_history_messages": 2})

    assert alone["history"] is None
    assert first["history"] == {"stored": 0, "sent": 0, "first_position": 0}
    assert fake.requests_for("m")[-1]["messages"][1:] == [{"role": "user", "content": "hi"}]
