"""A run's conversation is stored once: its messages as rows added by each checkpoint, the
state beside the run without them, and a session's history referenced, not copied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text

from app.store.database import Database
from app.store.migrations import downgrade, upgrade
from app.store.models import Run, RunMessage
from app.store.runs import RunRepository
from app.testing import FakeModel, call, calls
from app.testing import text as answer
from tests.api.conftest import Client, services_of

pytestmark = pytest.mark.anyio


async def stored_row(client: Client, run_id: str) -> tuple[dict[str, Any], list[tuple[int, Any]]]:
    """The run's state as its row holds it, and its message rows (position, message)."""
    async with services_of(client).db.read_scope() as session:
        state = await session.scalar(select(Run.state).where(Run.id == run_id))
        assert state is not None
        rows = await session.execute(
            select(RunMessage.position, RunMessage.message)
            .where(RunMessage.run_id == run_id)
            .order_by(RunMessage.position)
        )
        return state, [(position, message) for position, message in rows.all()]


async def test_the_state_beside_the_run_holds_no_conversation(
    client: Client, fake: FakeModel
) -> None:
    big = [("long_text", {"kilobytes": 5}) for _ in range(3)]
    fake.script("m", [calls(*big), call("add", {"a": 1, "b": 2}), answer("done")])
    created = await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"})
    run = created.json()
    assert run["status"] == "completed"

    state, rows = await stored_row(client, run["id"])
    assert "messages" not in state
    assert state["message_count"] == len(run["messages"]) == 8
    assert [position for position, _ in rows] == list(range(8))
    assert [message for _, message in rows] == run["messages"]
    # The outputs are in their tool messages; the steps point at them.
    assert len(json.dumps(state)) < 5_000
    stored_calls = [c for step in state["steps"] for c in step["tool_calls"]]
    assert [c["output_at"] for c in stored_calls] == [2, 3, 4, 6]
    assert all("output" not in c for c in stored_calls)
    shown = [c["output"] for step in run["steps"] for c in step["tool_calls"]]
    assert shown == ["x" * 5 * 1024] * 3 + ["3"]
    assert fake.requests_for("m")[2]["messages"][1:] == run["messages"][:-1]


async def test_a_checkpoint_adds_only_the_new_messages(client: Client, fake: FakeModel) -> None:
    inserted: list[int] = []
    fake.script("m", [call("add", {"a": 1, "b": 2}), call("add", {"a": 3, "b": 4}), answer("7")])
    db = services_of(client).db

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RUN_MESSAGES"):
            inserted.append(len(parameters) if isinstance(parameters, list) else 1)

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        created = await client.post(
            "/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"}
        )
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)
    run = created.json()

    assert run["status"] == "completed"
    # Every message is inserted once (the primary key would refuse a second time), in the
    # checkpoint that first holds it: the input, then each answer, then each tool result.
    assert len(run["messages"]) == 6
    assert sum(inserted) == 6
    assert len(inserted) >= 4


async def test_a_session_s_history_is_referenced_not_copied(
    client: Client, fake: FakeModel
) -> None:
    fake.script("m", [call("add", {"a": 1, "b": 2}), answer("done")])
    body = {"agent": "calc", "session_id": "s1"}
    first = (await client.post("/runs", params={"wait": 10}, json=body | {"input": "a"})).json()
    second = (await client.post("/runs", params={"wait": 10}, json=body | {"input": "b"})).json()

    history = first["messages"]
    assert second["messages"][: len(history)] == history
    assert [m["role"] for m in second["messages"][len(history) :]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    state, rows = await stored_row(client, second["id"])
    assert state["history_length"] == len(history) == 4
    assert [position for position, _ in rows] == [4, 5, 6, 7]
    assert second["steps"][0]["tool_calls"][0]["output"] == "3"
    # The model was sent the history too.
    assert fake.requests_for("m")[2]["messages"][1:5] == history

    listed = (await client.get("/runs", params={"session_id": "s1"})).json()["items"]
    assert [r["messages"] for r in listed] == [second["messages"], first["messages"]]
    session = (await client.get("/sessions/s1")).json()
    assert session["messages"] == second["messages"]


async def test_a_forgotten_session_leaves_its_runs_their_own_messages(
    client: Client, fake: FakeModel
) -> None:
    fake.script("m", [answer("one"), answer("two")])
    body = {"agent": "calc", "session_id": "s1"}
    await client.post("/runs", params={"wait": 10}, json=body | {"input": "a"})
    second = (await client.post("/runs", params={"wait": 10}, json=body | {"input": "b"})).json()
    assert (await client.delete("/sessions/s1")).status_code == 204
    # A new session under the same name is another conversation: not this run's history.
    fake.script("m", [answer("three")])
    await client.post("/runs", params={"wait": 10}, json=body | {"input": "c"})

    shown = (await client.get(f"/runs/{second['id']}")).json()
    assert second["messages"][0]["content"] == "a"
    assert shown["messages"] == second["messages"][2:]


async def test_migration_moves_stored_runs_and_back(migrated_url: str, tmp_path: Path) -> None:
    history = [{"role": "user", "content": "old"}, {"role": "assistant", "content": "reply"}]
    own = [
        {"role": "user", "content": "add"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "3"},
        {"role": "assistant", "content": "3"},
    ]
    step = {
        "agent": "calc",
        "duration_ms": 1.0,
        "tool_calls": [
            {
                "call_id": "c1",
                "name": "add",
                "raw_arguments": "{}",
                "arguments": {},
                "status": "completed",
                "output": "3",
                "in_doubt": False,
                "handoff_to": None,
                "tool_failed": False,
                "truncated": False,
            }
        ],
    }
    state = {
        "agent": "calc",
        "current_agent": "calc",
        "config": {},
        "messages": [*history, *own],
        "history_length": 2,
        "variables": {},
        "run_id": "run_m",
        "session_id": "gone",
        "status": "completed",
        "turns": 2,
        "steps": [step],
        "open_step": False,
        "usage": {"requests": 2},
        "decisions": [],
        "remembered_tools": [],
        "elapsed_ms": 1.0,
        "final_output": "3",
        "error": None,
    }
    # SQLite gets a file of its own: the migration rebuilds a table, which other tests' shared
    # file need not go through.
    own_file = not migrated_url.startswith("postgresql")
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}" if own_file else migrated_url)
    try:
        if own_file:
            await upgrade(db.engine, "0006")
        await downgrade(db.engine, "0006")
        async with db.session_scope() as session:
            await session.execute(
                text(
                    "INSERT INTO runs (id, status, agent, current_agent, input, config, context,"
                    " metadata, state, cancel_requested, event_seq, turns, lease_token,"
                    " takeovers, created_at, updated_at) VALUES ('run_m', 'completed', 'calc',"
                    " 'calc', '\"add\"', '{}', '{}', '{}', :state, false, 0, 2, 0, 0,"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"state": json.dumps(state)},
            )
        await upgrade(db.engine, "head")
        async with db.read_scope() as session:
            raw = await session.scalar(select(Run.state).where(Run.id == "run_m"))
            assert raw is not None
            assert "messages" not in raw
            run = await RunRepository(session).get("run_m")
            assert run is not None
            assert run.state is not None
            assert run.state["messages"] == [*history, *own]
            assert run.state["steps"][0]["tool_calls"][0]["output"] == "3"
        await downgrade(db.engine, "0006")
        async with db.read_scope() as session:
            back = await session.scalar(text("SELECT state FROM runs WHERE id = 'run_m'"))
            assert (json.loads(back) if isinstance(back, str) else back) == state
    finally:
        await upgrade(db.engine, "head")
        async with db.session_scope() as session:
            await session.execute(text("DELETE FROM runs WHERE id = 'run_m'"))
        await db.dispose()
