"""Properties of the door, checked on generated requests (Hypothesis), on SQLite and PostgreSQL:
what the API accepts it stores and serves back unchanged; what it refuses is a 4xx problem+json
that stores nothing; no request of any shape gets a 5xx (contract, "Text that can be stored,
and hostile clients")."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.engine.text import UNSTORABLE
from app.services.callers import ANONYMOUS_CALLER
from app.testing import FakeModel, FakeToolCall, Reply, text
from tests.api.conftest import Client, ClientFactory, rested, services_of

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
SEEDED_CALL = "call_seeded"
EXAMPLES = settings(
    max_examples=120,
    deadline=None,
    # One service serves every example: its fixtures are meant to outlive them.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Any character at all, with the ones no database carries (NUL, lone surrogates) made common.
any_character = st.characters(codec=None, categories=None, exclude_categories=())
unstorable_character = st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff"])
any_text = st.text(any_character | any_character | unstorable_character, max_size=12)
# What the door accepts: every character but those no database or model API carries.
storable_text = st.text(
    st.characters(codec=None, exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12
)


def json_values(strings: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | strings
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4),
        max_leaves=16,
    )


def objects(strings: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(strings, json_values(strings), max_size=5)


def messages(strings: st.SearchStrategy[str]) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Chat Completions messages, with fields of their own beside the known ones."""
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "developer"]), "content": strings},
        optional={"name": strings, "extra": json_values(strings)},
    )
    return st.lists(message, min_size=1, max_size=3)


async def post_json(client: Client, path: str, body: Any) -> httpx.Response:
    """A JSON body as any client may send it: characters UTF-8 cannot carry as JSON escapes."""
    content = json.dumps(body).encode()
    return await client.post(path, content=content, headers={"content-type": "application/json"})


def holds_unstorable(response: httpx.Response) -> bool:
    return UNSTORABLE.search(json.dumps(response.json(), ensure_ascii=False)) is not None


def is_problem(response: httpx.Response) -> bool:
    return response.headers.get("content-type") == PROBLEM and set(response.json()) >= {
        "type",
        "title",
        "status",
        "detail",
    }


@pytest.fixture
async def queued_only(make_client: ClientFactory) -> AsyncIterator[Client]:
    async with make_client(with_executor=False) as client:
        yield client


@EXAMPLES
@given(
    run_input=storable_text.filter(bool) | messages(storable_text),
    metadata=objects(storable_text),
    context=objects(storable_text),
)
async def test_what_the_api_accepts_comes_back_unchanged(
    queued_only: Client, run_input: Any, metadata: dict[str, Any], context: dict[str, Any]
) -> None:
    body = {"agent": "calc", "input": run_input, "metadata": metadata, "context": context}

    created = await post_json(queued_only, "/runs", body)

    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    shown = (await queued_only.get(f"/runs/{run_id}")).json()
    assert shown["metadata"] == metadata
    sent = [{"role": "user", "content": run_input}] if isinstance(run_input, str) else run_input
    assert shown["messages"] == sent
    stored = await services_of(queued_only).runs.get(run_id, ANONYMOUS_CALLER)
    assert stored.context == context
    assert stored.input == sent


# Bodies near a valid one, so that most reach the checks past the shape (and some are taken),
# and any JSON at all.
near_valid_bodies = st.fixed_dictionaries(
    {"agent": st.just("calc"), "input": any_text | messages(any_text)},
    optional={
        "metadata": objects(any_text),
        "context": objects(any_text),
        "session_id": any_text,
        "config": st.fixed_dictionaries({}, optional={"max_turns": st.integers(-1, 1001)}),
        "if_busy": st.sampled_from(["enqueue", "reject", "interrupt"]) | any_text,
    },
)


@EXAMPLES
@given(body=near_valid_bodies | near_valid_bodies | json_values(any_text))
@example(body={"agent": "calc", "input": "\ud800"})
@example(body={"agent": "calc", "input": "x", "metadata": {"k\x00": 1}})
@example(body={"agent": "calc", "input": "x", "context": {"a": ["\udfff"]}})
@example(body={"agent": "calc", "input": [{"role": "user", "content": "x", "y": "\x00"}]})
async def test_any_body_is_taken_or_refused_with_a_problem_and_never_breaks(
    queued_only: Client, body: Any
) -> None:
    before = len((await queued_only.get("/runs", params={"limit": 100})).json()["items"])

    response = await post_json(queued_only, "/runs", body)

    if response.status_code == 201:
        assert not holds_unstorable(response)
        return
    assert 400 <= response.status_code < 500, response.text
    assert is_problem(response)
    listed = await queued_only.get("/runs", params={"limit": 100})
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == before


@EXAMPLES
@given(
    body=st.fixed_dictionaries(
        {
            "decisions": st.lists(
                st.fixed_dictionaries(
                    {"call_id": st.just(SEEDED_CALL) | any_text, "approved": st.booleans()},
                    optional={
                        "reason": any_text,
                        "arguments": st.fixed_dictionaries({"record_id": any_text})
                        | objects(any_text),
                        "remember": st.booleans(),
                        "x": any_text,
                    },
                ),
                max_size=3,
            )
        }
    )
    | json_values(any_text)
)
@example(body={"decisions": [{"call_id": SEEDED_CALL, "approved": False, "reason": "\x00"}]})
@example(
    body={
        "decisions": [
            {"call_id": SEEDED_CALL, "approved": True, "arguments": {"record_id": "\ud800"}}
        ]
    }
)
async def test_any_decision_is_taken_or_refused_with_a_problem(
    client: Client, parks: None, body: Any
) -> None:
    # A run of its own for each example: one a decision was taken on waits no more.
    created = await client.post("/runs", json={"agent": "calc", "input": "go"})
    before = await rested(client, created.json()["id"])
    assert before["status"] == "pending_approval"
    run_id = before["id"]

    response = await post_json(client, f"/runs/{run_id}/approvals", body)

    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert is_problem(response)
        after = (await client.get(f"/runs/{run_id}")).json()
        assert after["decisions"] == before["decisions"]
    else:
        assert not holds_unstorable(response)


@pytest.fixture
def parks(fake: FakeModel) -> None:
    """Every run asks to delete a record (the call `call_seeded`), which waits for a person."""
    delete = FakeToolCall(name="delete_record", arguments={"record_id": "r1"}, id=SEEDED_CALL)
    fake.script("m", [Reply(tool_calls=[delete]), text("done")])


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@EXAMPLES
@given(
    last_event_id=header_text,
    query=st.dictionaries(
        st.sampled_from(["last_event_id", "x"]), header_text | st.integers().map(str), max_size=2
    ),
)
async def test_any_resume_point_is_streamed_from_or_refused_with_a_problem(
    finished: tuple[Client, str], last_event_id: str, query: dict[str, str]
) -> None:
    client, run_id = finished

    response = await client.get(
        f"/runs/{run_id}/events", headers={"Last-Event-ID": last_event_id}, params=query
    )

    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert is_problem(response)
    else:
        assert response.headers["content-type"].startswith("text/event-stream")


@pytest.fixture
async def finished(client: Client, fake: FakeModel) -> tuple[Client, str]:
    fake.script("m", [text("done")])
    created = await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"})
    assert created.json()["status"] == "completed"
    return client, created.json()["id"]
