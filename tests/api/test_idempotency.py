"""`Idempotency-Key` on `POST /runs`: a retry gets the first answer, never a second run."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pydantic import SecretStr
from sqlalchemy import update

from app.api.routes.runs import fingerprint
from app.api.schemas import CreateRun
from app.services.lifecycle import now
from app.store.models import IdempotencyKey
from tests.api.conftest import Client, ClientFactory, services_of

pytestmark = pytest.mark.anyio

BODY = {"agent": "calc", "input": "hello", "context": {"a": 1}}


async def post(client: Client, body: dict[str, Any], key: str) -> Any:
    return await client.post("/runs", json=body, headers={"Idempotency-Key": key})


@pytest.fixture
async def queued_only(make_client: ClientFactory) -> Any:
    async with make_client(with_executor=False) as client:
        yield client


async def test_same_key_and_body_get_the_same_run(queued_only: Client) -> None:
    first = await post(queued_only, BODY, "k1")
    # The same body, spelled differently, with the defaults written out.
    second = await post(queued_only, {**BODY, "metadata": {}, "if_busy": "enqueue"}, "k1")

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["location"] == first.headers["location"]
    assert len((await queued_only.get("/runs")).json()["items"]) == 1


async def test_a_repeat_gets_the_run_as_it_is_now(queued_only: Client) -> None:
    first = (await post(queued_only, BODY, "k1")).json()
    await queued_only.post(f"/runs/{first['id']}/cancel")

    again = await post(queued_only, BODY, "k1")

    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"


async def test_same_key_with_another_body_is_422(queued_only: Client) -> None:
    await post(queued_only, BODY, "k1")

    response = await post(queued_only, {**BODY, "input": "something else"}, "k1")

    assert response.status_code == 422
    assert response.json()["type"] == "/problems/idempotency-key-reused"


async def test_keys_are_independent(queued_only: Client) -> None:
    one = await post(queued_only, BODY, "k1")
    two = await post(queued_only, BODY, "k2")

    assert one.json()["id"] != two.json()["id"]


async def test_a_refused_request_does_not_burn_its_key(queued_only: Client) -> None:
    refused = await post(queued_only, {**BODY, "agent": "nobody"}, "k1")
    accepted = await post(queued_only, BODY, "k1")

    assert refused.status_code == 422
    assert accepted.status_code == 201


async def test_a_repeat_before_the_first_stored_anything_is_409(queued_only: Client) -> None:
    db = services_of(queued_only).db
    # The first request has reserved the key and not yet stored its run.
    async with db.session_scope() as session:
        session.add(
            IdempotencyKey(
                owner="", scope="runs.create", key="k1", request_hash="x", created_at=now()
            )
        )

    response = await post(queued_only, BODY, "k1")

    assert response.status_code == 422  # another body: reused wins over in-use
    async with db.session_scope() as session:
        await session.execute(update(IdempotencyKey).values(request_hash=_hash_of(BODY)))
    response = await post(queued_only, BODY, "k1")
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/idempotency-key-in-use"


async def test_concurrent_repeats_create_one_run(queued_only: Client) -> None:
    statuses: list[int] = []
    ids: set[str] = set()

    async def send() -> None:
        response = await post(queued_only, BODY, "k-concurrent")
        statuses.append(response.status_code)
        if response.status_code in (200, 201):
            ids.add(response.json()["id"])

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(send)

    assert statuses.count(201) == 1
    assert set(statuses) <= {200, 201, 409}
    assert len(ids) == 1
    assert len((await queued_only.get("/runs")).json()["items"]) == 1


def _hash_of(body: dict[str, Any]) -> str:
    return fingerprint(CreateRun.model_validate(body))


async def test_each_api_key_has_keys_of_its_own(make_client: ClientFactory) -> None:
    keys = {"api_keys": SecretStr("a:secret-of-a-0123456789, b:secret-of-b-0123456789")}
    async with make_client(with_executor=False, **keys) as client:
        as_a = {"Authorization": "Bearer secret-of-a-0123456789", "Idempotency-Key": "k1"}
        as_b = {"Authorization": "Bearer secret-of-b-0123456789", "Idempotency-Key": "k1"}
        first = await client.post("/runs", json=BODY, headers=as_a)
        # B's key of the same name is B's own: neither A's run nor a conflict with A's body.
        other = await client.post("/runs", json={**BODY, "input": "other"}, headers=as_b)
        again = await client.post("/runs", json=BODY, headers=as_a)

    assert first.status_code == other.status_code == 201
    assert other.json()["id"] != first.json()["id"]
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
