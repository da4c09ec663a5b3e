"""Text that can be stored: what a client sends is refused or kept exactly; what a model or a
tool produces is stored with the characters no database can hold replaced (contract, "Text that
can be stored, and hostile clients")."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text as sql

from app.engine.text import UNSTORABLE
from app.store.models import Run
from app.store.runs import RunRepository
from app.store.tenancy import EVERY_TENANT
from app.testing import FakeModel, call, text
from tests.api.conftest import Client, ClientFactory, rested, services_of
from tests.conftest import is_postgres

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
SURROGATE = "\ud800"
NUL = "\x00"
REPLACEMENT = "\ufffd"


def raw_json(body: dict[str, Any]) -> bytes:
    """The body as a client would send it: lone surrogates as JSON escapes."""
    return json.dumps(body).encode()


async def post_raw(client: Client, path: str, body: dict[str, Any]) -> Any:
    return await client.post(
        path, content=raw_json(body), headers={"content-type": "application/json"}
    )


CREATE_BODIES = [
    ({"agent": "calc", "input": SURROGATE}, ["body", "input"]),
    ({"agent": "calc", "input": f"a{NUL}b"}, ["body", "input"]),
    ({"agent": "calc", "input": "x", "metadata": {"k": [1, f"x{SURROGATE}"]}}, None),
    ({"agent": "calc", "input": "x", "metadata": {f"k{NUL}": 1}}, None),
    ({"agent": "calc", "input": "x", "context": {"user": SURROGATE}}, ["body", "context", "user"]),
    (
        {"agent": "calc", "input": [{"role": "user", "content": f"hi{NUL}"}]},
        ["body", "input", 0, "content"],
    ),
    (
        {"agent": "calc", "input": [{"role": "user", "content": "hi", "extra": {"x": SURROGATE}}]},
        ["body", "input", 0, "extra", "x"],
    ),
    ({"agent": f"calc{SURROGATE}", "input": "x"}, ["body", "agent"]),
]


@pytest.mark.parametrize(("body", "loc"), CREATE_BODIES)
async def test_unstorable_strings_from_a_client_are_refused_and_nothing_is_stored(
    make_client: ClientFactory, body: dict[str, Any], loc: list[str | int] | None
) -> None:
    async with make_client(with_executor=False) as client:
        response = await post_raw(client, "/runs", body)
        listed = await client.get("/runs")

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "/problems/validation-error"
    assert "cannot be stored" in problem["detail"]
    if loc is not None:
        assert problem["errors"][0]["loc"] == loc
    assert listed.status_code == 200
    assert listed.json()["items"] == []


async def test_a_metadata_key_is_named_where_it_is(make_client: ClientFactory) -> None:
    async with make_client(with_executor=False) as client:
        response = await post_raw(
            client, "/runs", {"agent": "calc", "input": "x", "metadata": {"a": {f"k{NUL}": 1}}}
        )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "metadata", "a", f"k{REPLACEMENT}"]


async def test_unstorable_strings_in_decisions_are_refused(client: Client, fake: FakeModel) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("done")])
    parked = await rested(
        client, (await client.post("/runs", json={"agent": "calc", "input": "x"})).json()["id"]
    )
    call_id = parked["pending_approvals"][0]["call_id"]

    for decision in (
        {"call_id": call_id, "approved": False, "reason": f"no{NUL}"},
        {"call_id": call_id, "approved": True, "arguments": {"record_id": SURROGATE}},
    ):
        response = await post_raw(
            client, f"/runs/{parked['id']}/approvals", {"decisions": [decision]}
        )
        assert response.status_code == 422, response.text
        assert "cannot be stored" in response.json()["detail"]

    assert (await client.get(f"/runs/{parked['id']}")).json()["status"] == "pending_approval"


async def test_an_unstorable_idempotency_key_is_refused(client: Client) -> None:
    response = await client.post(
        "/runs",
        json={"agent": "calc", "input": "x"},
        headers={"Idempotency-Key": "key\x7f"},
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["header", "idempotency-key"]


@pytest.mark.parametrize(
    "value",
    ["plain", "emoji \U0001f600 and \u2028", "\ufffd", "\\ud800 written out", "", "tab\tnew\nline"],
)
async def test_storable_strings_come_back_exactly(make_client: ClientFactory, value: str) -> None:
    async with make_client(with_executor=False) as client:
        body = {
            "agent": "calc",
            "input": [{"role": "user", "content": value or "x", "name": value or None}],
            "metadata": {value: [value], "k": value},
            "context": {value: value},
        }
        created = await post_raw(client, "/runs", body)
        assert created.status_code == 201, created.text
        run = (await client.get(f"/runs/{created.json()['id']}")).json()

    assert run["metadata"] == {value: [value], "k": value}
    assert run["messages"][0]["content"] == (value or "x")


async def test_text_a_model_or_a_tool_produces_is_stored_with_replacements(
    client: Client, fake: FakeModel
) -> None:
    fake.script(
        "m",
        [
            call("unstorable_text", {"text": f"in{NUL}put"}),
            text(f"done{NUL} with {SURROGATE}"),
        ],
    )

    created = await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"})

    run = created.json()
    assert created.status_code == 201
    assert run["status"] == "completed", run["error"]
    assert run["final_output"] == f"done{REPLACEMENT} with {REPLACEMENT}"
    tool_call = run["steps"][0]["tool_calls"][0]
    assert tool_call["arguments"] == {"text": f"in{REPLACEMENT}put"}
    assert tool_call["output"] == f"{REPLACEMENT}in{REPLACEMENT}put{REPLACEMENT}"
    stream = (await client.get(f"/runs/{run['id']}/events")).text
    data = [json.loads(line[6:]) for line in stream.splitlines() if line.startswith("data: ")]
    assert data[-1]["status"] == "completed"
    assert not UNSTORABLE.search(json.dumps(data, ensure_ascii=False))


async def test_a_session_with_model_made_control_characters_goes_on(
    client: Client, fake: FakeModel
) -> None:
    fake.script("m", [text(f"first{NUL}{SURROGATE}")])
    body = {"agent": "calc", "input": "x", "session_id": "s1"}
    first = await client.post("/runs", params={"wait": 10}, json=body)
    fake.script("m", [text("second")])
    second = await client.post("/runs", params={"wait": 10}, json=body)

    assert first.json()["status"] == second.json()["status"] == "completed"
    session = (await client.get("/sessions/s1")).json()
    assert session["messages"][1]["content"] == f"first{REPLACEMENT}{REPLACEMENT}"
    assert (await client.get("/runs", params={"session_id": "s1"})).status_code == 200


@pytest.fixture
async def poisoned_row(client: Client) -> str:
    """A run stored before the door refused lone surrogates: JSON written as an older release
    wrote it, straight into the table."""
    services = services_of(client)
    created = await client.post("/runs", json={"agent": "calc", "input": "x"})
    run_id: str = created.json()["id"]
    await rested(client, run_id)
    async with services.db.session_scope() as session:
        await session.execute(
            sql("UPDATE runs SET metadata = :metadata WHERE id = :id"),
            {"metadata": '{"k": "\\ud800 and \\u0000"}', "id": run_id},
        )
    return run_id


async def test_no_stored_row_makes_a_read_answer_500(client: Client, poisoned_row: str) -> None:
    one = await client.get(f"/runs/{poisoned_row}")
    listed = await client.get("/runs")

    assert one.status_code == 200, one.text
    assert one.json()["metadata"] == {"k": f"{REPLACEMENT} and {REPLACEMENT}"}
    assert listed.status_code == 200
    assert listed.json()["items"][0]["metadata"] == one.json()["metadata"]


async def test_the_store_reads_back_what_it_holds(client: Client, poisoned_row: str) -> None:
    async with services_of(client).db.read_scope() as session:
        run = await RunRepository(session, EVERY_TENANT).get(poisoned_row)
    assert isinstance(run, Run)
    assert run.run_metadata == {"k": f"{REPLACEMENT} and {REPLACEMENT}"}


@pytest.fixture
async def refused_tool_output(client: Client) -> AsyncIterator[None]:
    """The database itself refuses to store one tool output, every time: a deterministic
    error, not a lost executor."""
    db = services_of(client).db
    async with db.session_scope() as session:
        if is_postgres(str(db.url)):
            await session.execute(
                sql(
                    "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'refused by a trigger'; END $$"
                )
            )
            await session.execute(
                sql(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON run_events FOR EACH ROW "
                    "WHEN (NEW.data::text LIKE '%poison%') EXECUTE FUNCTION refuse_poison()"
                )
            )
        else:
            await session.execute(
                sql(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON run_events "
                    "WHEN NEW.data LIKE '%poison%' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
                )
            )
    try:
        yield
    finally:
        async with db.session_scope() as session:
            await session.execute(
                sql("DROP TRIGGER refuse_poison ON run_events")
                if is_postgres(str(db.url))
                else sql("DROP TRIGGER refuse_poison")
            )
            if is_postgres(str(db.url)):
                await session.execute(sql("DROP FUNCTION refuse_poison"))


async def test_a_write_the_database_refuses_fails_the_run_at_once(
    client: Client, fake: FakeModel, refused_tool_output: None
) -> None:
    fake.script("m", [call("unstorable_text", {"text": "poison"}), text("never")])

    created = await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"})

    run = created.json()
    assert run["status"] == "failed"
    assert run["error"]["code"] == "internal_error"
    assert "database refused" in run["error"]["message"]
    assert "taken over" not in run["error"]["message"]
    assert len(fake.requests) == 1  # never handed to another executor to try again
