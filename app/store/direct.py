"""A run's hot writes on PostgreSQL, each one statement sent by asyncpg itself.

A one-turn run is created, started and ended: three writes, each a transaction of a few
statements (the run's row, its new messages and steps, its events). Through the ORM every
statement costs 150-250 µs of Python (its cache key, its parameters, its result) and BEGIN and
COMMIT are round trips of their own. Here each write is one statement: data-modifying CTEs
that update or insert the run's row and insert its other rows only when the row was written,
committed on its own, prepared once per connection by asyncpg: a two-row write measured
about 150 µs of CPU, against 600 µs through the ORM.

Only writes that are the whole of their transaction come here: a run without a session (a
session run's history and end are written with its session, under the session's lock), not
parked for a person (approval requests are stored with it), without webhook deliveries to
store. Everything else, and SQLite, goes through `RunLifecycle` in a session. What is stored
is the same either way, and so are the fences, the signals and the caller's copy of the run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

import asyncpg

from app.engine.state import RunStatus
from app.store import signals
from app.store.conversation import StoredState, stored_form, whole_of_own_rows
from app.store.database import Database
from app.store.events import EventRecord, status_event
from app.store.leases import Claim
from app.store.lifecycle import (
    RUN_COLUMNS,
    FencedWrites,
    Saved,
    apply_stored,
)
from app.store.models import Run
from app.store.tenancy import Tenancy

# Columns of the runs table that hold JSON: asyncpg sends them as JSON text.
_JSON_COLUMNS = frozenset(
    {"principal", "input", "config", "context", "metadata", "state", "output_schema"}
    | {"error", "tools"}
)

_CREATE = """
WITH new_run AS (
    INSERT INTO runs (
        id, tenant, principal, queue_rank, status, agent, current_agent, session_id, input,
        config, context, metadata, output_schema, webhook, tools, cancel_requested,
        event_seq, turns, lease_token, takeovers, created_at, updated_at
    )
    SELECT
        $1, $2, $3::json,
        CASE WHEN behind_own.rank > head.rank THEN behind_own.rank ELSE head.rank END,
        $4, $5, $5, NULL, $6::json, $7::json, $8::json, $9::json, $10::json, $11,
        $12::json, false, 1, 0, 0, 0, $13, $13
    FROM
        (SELECT coalesce(min(queue_rank), 0) AS rank FROM runs WHERE status = $4) AS head,
        (SELECT max(queue_rank) + 1 AS rank FROM runs WHERE tenant = $2 AND status = $4)
            AS behind_own
    RETURNING seq, queue_rank
), queued AS (
    INSERT INTO run_events (run_id, seq, name, data, size, message_at, created_at)
    SELECT $1, 1, $14, $15::json, $16, NULL, $13 FROM new_run
)
SELECT seq, queue_rank FROM new_run
"""

# The rows beside a fenced write's, inserted only when its update found the run (`saved`).
# Their columns come as arrays of text: asyncpg knows text[] at once, where an array of
# another type costs a type lookup on each new connection (8 ms idle, far more at start-up).
_ROWS_BESIDE = """
, messages AS (
    INSERT INTO run_messages (run_id, position, message, content_event)
    SELECT $1, m.position::int, m.message::json, m.content_event::int
    FROM saved, unnest($6::text[], $7::text[], $8::text[]) AS m(position, message, content_event)
), steps AS (
    INSERT INTO run_steps (run_id, position, step)
    SELECT $1, s.position::int, s.step::json
    FROM saved, unnest($9::text[], $10::text[]) AS s(position, step)
), events AS (
    INSERT INTO run_events (run_id, seq, name, data, size, message_at, created_at)
    SELECT $1, $3 + e.n, e.name, e.data::json, e.size::int, e.message_at::int, $5
    FROM saved, unnest($11::text[], $12::text[], $13::text[], $14::text[])
        WITH ORDINALITY AS e(name, data, size, message_at, n)
)
SELECT event_seq, cancel_requested FROM saved
"""
_FIRST_VALUE = 15  # the parameter of the first column the update sets


@cache
def _fenced_statement(columns: tuple[str, ...]) -> str:
    """The fenced write of these columns: the run's row only while the claim's lease token
    and the run's last event id are still those the executor knows ($1-$5: run, token, last
    event id, new events, time), and the rows beside it."""
    sets = ", ".join(
        f"{column} = ${_FIRST_VALUE + i}{'::json' if column in _JSON_COLUMNS else ''}"
        for i, column in enumerate(columns)
    )
    return (
        "WITH saved AS (UPDATE runs SET "
        f"{sets}, event_seq = event_seq + $4, updated_at = $5 "
        "WHERE id = $1 AND lease_token = $2 AND event_seq = $3 "
        "RETURNING event_seq, cancel_requested)" + _ROWS_BESIDE
    )


# A run with everything its state is kept in beside it, in one round trip.
_RUN_WITH_ROWS = """
SELECT
    runs.*,
    (SELECT json_agg(json_build_array(position, message, content_event) ORDER BY position)
        FROM run_messages WHERE run_id = runs.id) AS message_rows,
    (SELECT json_agg(step ORDER BY position) FROM run_steps WHERE run_id = runs.id)
        AS step_rows,
    (SELECT json_agg(json_build_array(seq, data -> 'output'))
        FROM run_events WHERE run_id = runs.id AND name = 'tool_call.completed') AS held_rows
FROM runs
WHERE id = $1 AND ($2::varchar IS NULL OR tenant = $2)
"""
# A run's attributes by the names of their columns.
_RUN_ATTRIBUTES = {column: attribute for attribute, column in RUN_COLUMNS.items()}

_STORED_EARLIER = "SELECT lease_token, event_seq, cancel_requested FROM runs WHERE id = $1"


class DirectWrites(FencedWrites):
    """A run's writes that are the whole of their transaction (the caller knows), one
    statement each."""

    def __init__(self, db: Database) -> None:
        assert not db.is_sqlite, "one statement a write is PostgreSQL's"
        self.db = db

    async def create(self, run: Run, now: datetime) -> None:
        """Store a new run (built, not added to a session) queued, with its first event:
        `RunLifecycle.create` for a run of no session."""
        assert run.session_id is None
        name, data = status_event(
            "run.queued", run.id, RunStatus.QUEUED, run.current_agent, None, None
        )
        async with self.db.driver() as connection:
            row = await connection.fetchrow(
                _CREATE,
                run.id,
                run.tenant,
                _json(run.principal),
                RunStatus.QUEUED.value,
                run.agent,
                _json(run.input),
                _json(run.config),
                _json(run.context),
                _json(run.run_metadata),
                _json(run.output_schema),
                run.webhook,
                _json(run.tools),
                now,
                name,
                json.dumps(data),
                len(json.dumps(data)),
            )
        assert row is not None
        values = {
            "seq": row["seq"],
            "queue_rank": row["queue_rank"],
            "status": RunStatus.QUEUED,
            "event_seq": 1,
            "cancel_requested": False,
            "lease_token": 0,
            "takeovers": 0,
            "turns": 0,
            "state": None,
            "created_at": now,
            "updated_at": now,
        }
        apply_stored(run, values)
        await self.db.committed([signals.WorkQueued()])

    async def _fenced(
        self,
        claim: Claim,
        run: Run,
        values: dict[str, Any],
        events: Sequence[EventRecord],
        now: datetime,
    ) -> Saved | None:
        after_seq = run.event_seq
        expected = after_seq + len(events)
        split = _split(run, values, events, expected)
        stored = values if split is None else {**values, "state": split.compact}
        columns = tuple(RUN_COLUMNS[key] for key in stored)
        set_values = [_parameter(RUN_COLUMNS[key], value) for key, value in stored.items()]
        places = split.message_events if split is not None else {}
        messages = split.new_messages if split is not None else []
        steps = split.new_steps if split is not None else []
        async with self.db.driver() as connection:
            row = await connection.fetchrow(
                _fenced_statement(columns),
                claim.run_id,
                claim.lease_token,
                after_seq,
                len(events),
                now,
                [str(m.position) for m in messages],
                [json.dumps(m.message) for m in messages],
                [_text(m.content_event) for m in messages],
                [str(position) for position, _ in steps],
                [json.dumps(step) for _, step in steps],
                [name for name, _ in events],
                [json.dumps({} if i in places else data) for i, (_, data) in enumerate(events)],
                [str(len(json.dumps(data))) for _, data in events],
                [_text(places.get(i)) for i in range(len(events))],
                *set_values,
            )
            if row is None:
                saved = await _stored_earlier(connection, claim, expected)
                if saved is None:
                    return None
            else:
                saved = Saved(row["event_seq"], bool(row["cancel_requested"]))
        carried = values if split is None else {**values, "state": split.carried}
        apply_stored(run, {**carried, "event_seq": saved.event_seq, "updated_at": now})
        await self.db.committed([signals.RunChanged(run.id, saved.event_seq, run.status)])
        return saved


class DirectReads:
    """The read of one run, in one statement (the ORM's takes three)."""

    def __init__(self, db: Database) -> None:
        assert not db.is_sqlite, "one statement a read is PostgreSQL's"
        self.db = db

    async def run(self, run_id: str, tenancy: Tenancy) -> Run | None:
        """`RunRepository.get` of a run of no session; raises `NeedsSession` for a session's
        run, whose history is read from its session's messages."""
        async with self.db.driver() as connection:
            row = await connection.fetchrow(_RUN_WITH_ROWS, run_id, tenancy.tenant)
        if row is None:
            return None
        if row["session_id"] is not None:
            raise NeedsSession(run_id)
        # The pool's connections decode JSON as the ORM's reads do (`load_stored_json`).
        values = {
            _RUN_ATTRIBUTES[column]: value
            for column, value in row.items()
            if column in _RUN_ATTRIBUTES
        }
        state = values["state"]
        if state is not None and "messages" not in state:
            values["state"] = whole_of_own_rows(
                state,
                [
                    (position, message, event)
                    for position, message, event in row["message_rows"] or []
                ],
                row["step_rows"] or [],
                dict(row["held_rows"] or []),
            )
        run = Run()
        apply_stored(run, values)
        return run


class NeedsSession(Exception):
    """A session's run: its state refers to the session's history."""


def _split(
    run: Run, values: dict[str, Any], events: Sequence[EventRecord], last_seq: int
) -> StoredState | None:
    """The state's split for the write (a run of no session: no history to refer to)."""
    state = values.get("state")
    if state is None:
        return None
    previous = run.state
    if previous is not None and "messages" not in previous:
        raise ValueError(f"run {run.id} was read without its messages")
    return stored_form(state, previous, None, events, last_seq - len(events) + 1)


async def _stored_earlier(
    connection: asyncpg.Connection, claim: Claim, expected_seq: int
) -> Saved | None:
    # As `RunLifecycle._stored_earlier`: the expected last event id under this very lease
    # means an attempt whose commit was in doubt stored this write.
    row = await connection.fetchrow(_STORED_EARLIER, claim.run_id)
    if row is None or row["lease_token"] != claim.lease_token:
        return None
    if row["event_seq"] != expected_seq:
        return None
    return Saved(row["event_seq"], bool(row["cancel_requested"]), earlier=True)


def _text(number: int | None) -> str | None:
    return None if number is None else str(number)


def _json(value: Any) -> str:
    # None as JSON null, as SQLAlchemy's JSON type stores it.
    return json.dumps(value)


def _parameter(column: str, value: Any) -> Any:
    if column in _JSON_COLUMNS:
        return _json(value)
    if isinstance(value, RunStatus):
        return value.value
    return value
