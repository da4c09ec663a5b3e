"""A run's conversation is stored once: its messages and its earlier steps as rows added by
each checkpoint, the state beside the run without them, each tool output once (in the event
that carried it), `message` events naming their message, and a session's history referenced,
not copied."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.database import Database
from app.store.direct import DirectReads, NeedsSession
from app.store.lifecycle import RUN_COLUMNS
from app.store.migrations import downgrade, upgrade
from app.store.models import Run, RunMessage, RunStep, StoredEvent
from app.store.runs import RunRepository
from app.store.tenancy import EVERY_TENANT, Tenancy
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


async def stored_steps(client: Client, run_id: str) -> list[dict[str, Any]]:
    async with services_of(client).db.read_scope() as session:
        rows = await session.scalars(
            select(RunStep.step).where(RunStep.run_id == run_id).order_by(RunStep.position)
        )
        return list(rows)


@dataclass
class Written:
    """What the store sent for one write of a run's state: its parameters, and how many
    messages it inserted."""

    parameters: Any
    messages: int


async def run_watching(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], list[Written]]:
    """A run of agent `calc` to its rest, and each write of its state meanwhile: through the
    ORM (an UPDATE of its row, INSERTs of its messages), or on PostgreSQL in one statement
    sent by asyncpg itself (`app.store.direct`)."""
    written: list[Written] = []
    db = services_of(client).db

    def orm(conn: Any, cursor: Any, sent: str, parameters: Any, *_: Any) -> None:
        statement = sent.lstrip().upper()
        if statement.startswith("UPDATE RUNS SET") and "STATE" in statement:
            written.append(Written(parameters, 0))
        elif statement.startswith("INSERT INTO RUN_MESSAGES"):
            rows = len(parameters) if isinstance(parameters, list) else 1
            written.append(Written(None, rows))

    def direct(query: Any) -> None:
        if "UPDATE runs SET" in query.query and " state = " in query.query:
            written.append(Written(query.args, len(query.args[5])))

    sends = db.driver

    @asynccontextmanager
    async def watched() -> AsyncIterator[Any]:
        async with sends() as connection:
            connection.add_query_logger(direct)
            try:
                yield connection
            finally:
                connection.remove_query_logger(direct)

    monkeypatch.setattr(db, "driver", watched)
    event.listen(db.engine.sync_engine, "before_cursor_execute", orm)
    try:
        created = await client.post(
            "/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"}
        )
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", orm)
    run: dict[str, Any] = created.json()
    return run, written


async def run_with_large_outputs(client: Client, fake: FakeModel) -> dict[str, Any]:
    """A completed run whose first turn's three calls return 5 KiB each, its second one 3."""
    big = [("long_text", {"kilobytes": 5}) for _ in range(3)]
    fake.script("m", [calls(*big), call("add", {"a": 1, "b": 2}), answer("done")])
    created = await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"})
    run: dict[str, Any] = created.json()
    assert run["status"] == "completed"
    return run


async def test_the_state_beside_the_run_holds_no_conversation(
    client: Client, fake: FakeModel
) -> None:
    run = await run_with_large_outputs(client, fake)

    state, rows = await stored_row(client, run["id"])
    assert "messages" not in state
    assert state["message_count"] == len(run["messages"]) == 8
    assert [position for position, _ in rows] == list(range(8))
    # A tool message's content is its call's output, which its event holds.
    tools = [2, 3, 4, 6]
    assert [p for p, m in rows if m["role"] == "tool" and m["content"] is None] == tools
    expected = [{**m, "content": None} if p in tools else m for p, m in enumerate(run["messages"])]
    assert [message for _, message in rows] == expected
    # The steps but the last are rows; the outputs are in their tool messages, the steps
    # point at them.
    assert len(json.dumps(state)) < 2_000
    earlier = await stored_steps(client, run["id"])
    assert len(earlier) == 2
    assert [step["tool_calls"] for step in state["steps"]] == [[]]
    stored_calls = [c for step in earlier for c in step["tool_calls"]]
    assert [c["output_at"] for c in stored_calls] == tools
    assert all("output" not in c for c in stored_calls)
    shown = [c["output"] for step in run["steps"] for c in step["tool_calls"]]
    assert shown == ["x" * 5 * 1024] * 3 + ["3"]
    assert fake.requests_for("m")[2]["messages"][1:] == run["messages"][:-1]


async def test_each_message_and_output_is_stored_once_and_read_whole(
    client: Client, fake: FakeModel
) -> None:
    run = await run_with_large_outputs(client, fake)

    async with services_of(client).db.read_scope() as session:
        raw = (
            await session.execute(
                select(
                    StoredEvent.seq,
                    StoredEvent.name,
                    StoredEvent.data,
                    StoredEvent.message_at,
                    StoredEvent.size,
                )
                .where(StoredEvent.run_id == run["id"])
                .order_by(StoredEvent.seq)
            )
        ).all()
        runs = RunRepository(session, EVERY_TENANT)
        read = await runs.events_after(run["id"], 0, limit=100)
        # Each alone too: the event holding a tool message's content is then on no page.
        alone = [(await runs.events_after(run["id"], e.seq - 1, limit=1))[0] for e in read]

    messages = [e.data["message"] for e in read if e.name == "message"]
    assert messages == run["messages"]
    assert [(e.name, e.data) for e in alone] == [(e.name, e.data) for e in read]
    assert [e.size for e in read] == [len(json.dumps(e.data)) for e in read]
    # Stored, a message event names its message; the outputs are only in their events.
    assert [row.message_at for row in raw if row.name == "message"] == list(range(8))
    assert all(row.data == {} for row in raw if row.name == "message")
    stored = sum(len(json.dumps(row.data)) for row in raw)
    _, rows = await stored_row(client, run["id"])
    stored += sum(len(json.dumps(message)) for _, message in rows)
    assert stored < len(json.dumps(run["messages"])) * 1.2


async def test_a_run_read_in_one_statement_is_the_run_the_orm_reads(
    client: Client, fake: FakeModel
) -> None:
    """On PostgreSQL a run of no session is read in one statement (`app.store.direct`): the
    same run as the ORM's three reads give, closed steps' outputs from their tool messages, an
    open step's from the events that carried them."""
    db = services_of(client).db
    if db.is_sqlite:
        pytest.skip("SQLite reads every run through the ORM")
    completed = await run_with_large_outputs(client, fake)
    fake.script("m", [calls(("delete_record", {"record_id": "r1"}), ("add", {"a": 1, "b": 2}))])
    parked = (
        await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"})
    ).json()
    assert parked["status"] == "pending_approval"
    fake.script("m", [answer("hi")])
    in_session = (
        await client.post(
            "/runs", params={"wait": 10}, json={"agent": "calc", "input": "x", "session_id": "s"}
        )
    ).json()

    reads = DirectReads(db)
    states: list[Any] = []
    for run_id in (completed["id"], parked["id"]):
        direct = await reads.run(run_id, EVERY_TENANT)
        async with db.read_scope() as session:
            through_orm = await RunRepository(session, EVERY_TENANT).get(run_id)
        assert direct is not None
        assert through_orm is not None
        for attribute in RUN_COLUMNS:
            assert getattr(direct, attribute) == getattr(through_orm, attribute), attribute
        states.append(direct.state)
    open_calls = states[1]["steps"][-1]["tool_calls"]  # the parked run's
    assert [c.get("output") for c in open_calls] == [None, "3"]
    assert await reads.run(completed["id"], Tenancy("someone else")) is None
    with pytest.raises(NeedsSession):
        await reads.run(in_session["id"], EVERY_TENANT)
    assert (await client.get(f"/runs/{in_session['id']}")).json()["messages"][-1] == {
        "role": "assistant",
        "content": "hi",
    }


async def test_a_checkpoint_stores_as_much_at_turn_ten_as_at_turn_two(
    client: Client, fake: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.script("m", [*(call("add", {"a": i, "b": 1}) for i in range(10)), answer("done")])
    run, writes = await run_watching(client, monkeypatch)
    assert run["status"] == "completed"
    written = [
        len(json.dumps(w.parameters, default=str)) for w in writes if w.parameters is not None
    ]
    # Three writes a turn; the last turns' are no longer than the first turns'.
    assert len(written) > 20
    assert max(written[-6:-1]) <= max(written[1:6]) + 50


async def test_a_checkpoint_adds_only_the_new_messages(
    client: Client, fake: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.script("m", [call("add", {"a": 1, "b": 2}), call("add", {"a": 3, "b": 4}), answer("7")])
    run, writes = await run_watching(client, monkeypatch)
    inserted = [w.messages for w in writes if w.messages]

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


async def insert_run(
    session: AsyncSession, run_id: str, status: str, state: dict[str, Any], *, event_seq: int
) -> None:
    """A run row as SQL writes it, whatever the models say: a migration test's own."""
    await session.execute(
        text(
            "INSERT INTO runs (id, status, agent, current_agent, input, config, context,"
            " metadata, state, cancel_requested, event_seq, turns, lease_token, takeovers,"
            " created_at, updated_at) VALUES (:id, :status, 'calc', 'calc', '\"add\"', '{}',"
            " '{}', '{}', :state, false, :event_seq, 2, 0, 0, CURRENT_TIMESTAMP,"
            " CURRENT_TIMESTAMP)"
        ),
        {"id": run_id, "status": status, "state": json.dumps(state), "event_seq": event_seq},
    )


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
                "external": False,
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
        "steps": [step, {"agent": "calc", "duration_ms": 1.0, "tool_calls": []}],
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
            await insert_run(session, "run_m", "completed", state, event_seq=0)
        await upgrade(db.engine, "head")
        async with db.read_scope() as session:
            raw = await session.scalar(select(Run.state).where(Run.id == "run_m"))
            assert raw is not None
            assert "messages" not in raw
            run = await RunRepository(session, EVERY_TENANT).get("run_m")
            assert run is not None
            assert run.state is not None
            assert run.state["messages"] == [*history, *own]
            assert run.state["steps"] == state["steps"]
            assert len(raw["steps"]) == 1
        await downgrade(db.engine, "0006")
        async with db.read_scope() as session:
            back = await session.scalar(text("SELECT state FROM runs WHERE id = 'run_m'"))
            assert (json.loads(back) if isinstance(back, str) else back) == state
    finally:
        await upgrade(db.engine, "head")
        async with db.session_scope() as session:
            await session.execute(text("DELETE FROM runs WHERE id = 'run_m'"))
        await db.dispose()


async def test_a_downgrade_puts_back_what_is_stored_once(migrated_url: str, tmp_path: Path) -> None:
    """A run written in this layout (an open step's output and a tool message's content in
    their events, a message event naming its message, an earlier step in a row) reads the
    same after a downgrade to the layout before it, and after the upgrade back."""
    call_ = {
        "call_id": "c2",
        "name": "add",
        "raw_arguments": "{}",
        "arguments": {},
        "status": "completed",
        "in_doubt": False,
        "handoff_to": None,
        "tool_failed": False,
        "truncated": False,
        "external": False,
    }
    earlier_call = {**call_, "call_id": "c1", "output_at": 2}
    first = {"agent": "calc", "duration_ms": 1.0, "tool_calls": [earlier_call]}
    compact = {
        "agent": "calc",
        "current_agent": "calc",
        "config": {},
        "message_count": 4,
        "history_length": 0,
        "run_id": "run_d",
        "status": "running",
        "turns": 2,
        "steps": [
            {"agent": "calc", "duration_ms": 0.0, "tool_calls": [{**call_, "output_event": 4}]}
        ],
        "open_step": True,
        "output_events": {"c2": 4},
        "usage": {"requests": 2},
    }
    ask = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "add"},
        {"role": "assistant", "content": None, "tool_calls": [ask]},
        {"role": "tool", "tool_call_id": "c1", "content": None},
        {"role": "assistant", "content": None, "tool_calls": [{**ask, "id": "c2"}]},
    ]
    events = [
        (1, "tool_call.completed", {"call_id": "c1", "name": "add", "output": "3"}, None),
        (2, "message", {}, 2),
        (3, "message", {}, 3),
        (4, "tool_call.completed", {"call_id": "c2", "name": "add", "output": "7"}, None),
    ]
    own_file = not migrated_url.startswith("postgresql")
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}" if own_file else migrated_url)
    try:
        await upgrade(db.engine, "head")
        async with db.session_scope() as session:
            await insert_run(session, "run_d", "running", compact, event_seq=4)
            for position, message in enumerate(messages):
                await session.execute(
                    text(
                        "INSERT INTO run_messages (run_id, position, message, content_event)"
                        " VALUES ('run_d', :position, :message, :event)"
                    ),
                    {"position": position, "message": json.dumps(message), "event": None},
                )
            await session.execute(
                text("UPDATE run_messages SET content_event = 1 WHERE position = 2")
            )
            await session.execute(
                text("INSERT INTO run_steps VALUES ('run_d', 0, :step)"),
                {"step": json.dumps(first)},
            )
            for seq, name, data, at in events:
                await session.execute(
                    text(
                        "INSERT INTO run_events (run_id, seq, name, data, size, message_at,"
                        " created_at) VALUES ('run_d', :seq, :name, :data, 0, :at,"
                        " CURRENT_TIMESTAMP)"
                    ),
                    {"seq": seq, "name": name, "data": json.dumps(data), "at": at},
                )
        whole = [*messages[:2], {**messages[2], "content": "3"}, messages[3]]

        async def read() -> tuple[dict[str, Any], list[dict[str, Any]]]:
            async with db.read_scope() as session:
                runs = RunRepository(session, EVERY_TENANT)
                run = await runs.get("run_d")
                assert run is not None
                assert run.state is not None
                return run.state, [e.data for e in await runs.events_after("run_d", 0, limit=9)]

        state, read_events = await read()
        assert state["messages"] == whole
        assert [c["output"] for step in state["steps"] for c in step["tool_calls"]] == ["3", "7"]
        assert read_events[1:3] == [{"message": whole[2]}, {"message": whole[3]}]
        await downgrade(db.engine, "0007")
        async with db.read_scope() as session:
            back = await session.scalar(text("SELECT state FROM runs WHERE id = 'run_d'"))
            back = json.loads(back) if isinstance(back, str) else back
            assert "output_events" not in back
            assert [c["output"] for c in back["steps"][-1]["tool_calls"]] == ["7"]
            assert [c["output_at"] for c in back["steps"][0]["tool_calls"]] == [2]
        await upgrade(db.engine, "head")
        again, data_again = await read()
        assert again["messages"] == whole
        assert again["steps"] == state["steps"]
        assert data_again == read_events
    finally:
        await upgrade(db.engine, "head")
        async with db.session_scope() as session:
            await session.execute(text("DELETE FROM runs WHERE id = 'run_d'"))
        await db.dispose()


async def test_a_downgrade_gives_a_run_the_window_of_history_its_model_saw(
    migrated_url: str, tmp_path: Path
) -> None:
    """A run that loaded only its session's newest messages (`max_history_messages`) refers to
    them from `history_from`: the layout before rows gets those back, not the session's first."""
    said = ["zero", "one", "two", "three", "next", "ok"]
    session_messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": content}
        for i, content in enumerate(said)
    ]
    compact = {
        "agent": "calc",
        "current_agent": "calc",
        "config": {"max_history_messages": 2},
        "message_count": 4,
        "history_length": 2,
        "history_from": 2,
        "run_id": "run_w",
        "session_id": "s_w",
        "status": "completed",
        "turns": 1,
        "steps": [{"agent": "calc", "duration_ms": 0.0, "tool_calls": []}],
        "open_step": False,
        "usage": {"requests": 1},
    }
    own_file = not migrated_url.startswith("postgresql")
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}" if own_file else migrated_url)
    try:
        await upgrade(db.engine, "head")
        async with db.session_scope() as session:
            await session.execute(
                text(
                    "INSERT INTO sessions (id, created_at, updated_at)"
                    " VALUES ('s_w', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            for position, message in enumerate(session_messages):
                await session.execute(
                    text(
                        "INSERT INTO session_messages (session_id, position, message, created_at)"
                        " VALUES ('s_w', :position, :message, CURRENT_TIMESTAMP)"
                    ),
                    {"position": position, "message": json.dumps(message)},
                )
            compact["history_through"] = await session.scalar(
                text("SELECT id FROM session_messages WHERE session_id = 's_w' AND position = 3")
            )
            await insert_run(session, "run_w", "completed", compact, event_seq=0)
            await session.execute(text("UPDATE runs SET session_id = 's_w' WHERE id = 'run_w'"))
            for position, message in enumerate(session_messages[4:], start=2):
                await session.execute(
                    text(
                        "INSERT INTO run_messages (run_id, position, message)"
                        " VALUES ('run_w', :position, :message)"
                    ),
                    {"position": position, "message": json.dumps(message)},
                )
        async with db.read_scope() as session:
            run = await RunRepository(session, EVERY_TENANT).get("run_w")
            assert run is not None
            assert run.state is not None
            assert run.state["messages"] == session_messages[2:]

        await downgrade(db.engine, "0006")

        async with db.read_scope() as session:
            back = await session.scalar(text("SELECT state FROM runs WHERE id = 'run_w'"))
            back = json.loads(back) if isinstance(back, str) else back
            assert back["messages"] == session_messages[2:]
            assert back["history_length"] == 2
    finally:
        await upgrade(db.engine, "head")
        async with db.session_scope() as session:
            await session.execute(text("DELETE FROM runs WHERE id = 'run_w'"))
            await session.execute(text("DELETE FROM sessions WHERE id = 's_w'"))
        await db.dispose()
