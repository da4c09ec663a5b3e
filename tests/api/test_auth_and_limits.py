"""API keys on every route, approver-only decisions, and the limits on what a request may ask.

Contract, "Operating it": 401 without a valid key when `API_KEYS` is set, 403 for a key that
may not decide approvals, keys never logged, names recorded as `decided_by`; 413 past
`MAX_REQUEST_BYTES`; `limit` 1..100.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from app.testing import FakeModel, call, text
from tests.api.conftest import Client, ClientFactory

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
UI_KEY = "ui-secret-0123456789"
BARE_KEY = "bare-secret-0123456789"
LEAD_KEY = "lead-secret-0123456789"
SECRETS = (UI_KEY, BARE_KEY, LEAD_KEY)


@pytest.fixture
async def secured(make_client: ClientFactory) -> AsyncIterator[Client]:
    async with make_client(
        api_keys=SecretStr(f"ui:{UI_KEY}, {BARE_KEY}"),
        approver_api_keys=SecretStr(f"lead:{LEAD_KEY}"),
    ) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def every_operation(client: Client) -> list[tuple[str, str]]:
    """Each route of the OpenAPI document, its path ids filled with an unknown id."""
    document = client.app.openapi()
    documented = [
        (method.upper(), re.sub(r"\{[^}]+\}", "nope", path))
        for path, operations in document["paths"].items()
        for method in operations
    ]
    return [*documented, ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc")]


PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}


async def test_every_route_but_the_probes_needs_a_valid_key(secured: Client) -> None:
    operations = every_operation(secured)
    assert len(operations) > 10
    with structlog.testing.capture_logs() as logs:
        for method, path in operations:
            body: dict[str, object] | None = {} if method == "POST" else None
            anonymous = await secured.request(method, path, json=body)
            wrong = await secured.request(method, path, json=body, headers=bearer("guess"))
            if (method, path) in PUBLIC:
                assert anonymous.status_code == 200, path
                continue
            assert anonymous.status_code == 401, (method, path)
            assert anonymous.headers["content-type"] == PROBLEM
            assert anonymous.headers["www-authenticate"] == 'Bearer realm="agent-runs"'
            assert wrong.status_code == 401, (method, path)
            assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
            deciding = method == "POST" and path.endswith("/approvals")
            # None of these keys is an admin's.
            erasing = method == "DELETE" and path.startswith("/tenants/")
            for key in (UI_KEY, BARE_KEY, LEAD_KEY):
                answer = await secured.request(method, path, json=body, headers=bearer(key))
                if (deciding and key != LEAD_KEY) or erasing:
                    assert answer.status_code == 403, (method, path, key)
                else:
                    assert answer.status_code not in (401, 403), (method, path, key)
    assert not any(secret in repr(entry) for entry in logs for secret in SECRETS)


async def test_only_approvers_decide_and_their_key_s_name_is_recorded(
    secured: Client, fake: FakeModel
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("done")])
    created = await secured.post(
        "/runs",
        params={"wait": 10},
        json={"agent": "calc", "input": "clean up"},
        headers=bearer(UI_KEY),
    )
    run = created.json()
    assert run["status"] == "pending_approval"
    decision = {
        "decisions": [{"call_id": run["pending_approvals"][0]["call_id"], "approved": True}]
    }
    path = f"/runs/{run['id']}/approvals"

    refused = await secured.post(path, json=decision, headers=bearer(UI_KEY))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == PROBLEM
    assert "'ui'" in refused.json()["detail"]
    assert UI_KEY not in refused.text
    assert (await secured.post(path, json=decision)).status_code == 401

    with structlog.testing.capture_logs() as logs:
        decided = await secured.post(path, json=decision, headers=bearer(LEAD_KEY))
    assert decided.status_code == 200, decided.text
    [entry] = decided.json()["decisions"]
    assert entry["decided_by"] == "lead"
    assert [e["caller"] for e in logs if e["event"] == "request"] == ["lead"]
    assert not any(LEAD_KEY in repr(entry) for entry in logs)
    # An approver's key opens every other route too.
    listed = await secured.get("/approvals", params={"status": "all"}, headers=bearer(LEAD_KEY))
    assert listed.status_code == 200


async def test_a_bare_key_is_named_by_its_position(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("done")])
    async with make_client(api_keys=SecretStr(f"{BARE_KEY}")) as client:
        run = (
            await client.post(
                "/runs",
                params={"wait": 10},
                json={"agent": "calc", "input": "x"},
                headers=bearer(BARE_KEY),
            )
        ).json()
        call_id = run["pending_approvals"][0]["call_id"]
        decided = await client.post(
            f"/runs/{run['id']}/approvals",
            json={"decisions": [{"call_id": call_id, "approved": True}]},
            headers=bearer(BARE_KEY),
        )
    assert decided.json()["decisions"][0]["decided_by"] == "key-1"


async def test_unreadable_keys_stop_the_service_from_starting(
    make_client: ClientFactory,
) -> None:
    with pytest.raises(ValueError, match="API_KEYS: item 2 has an empty name or key"):
        async with make_client(api_keys=SecretStr("ui:a,:b")):
            pass


# Limits


async def test_a_body_over_the_limit_is_refused_by_its_length(make_client: ClientFactory) -> None:
    async with make_client(max_request_bytes=2048) as client:
        response = await client.post("/runs", json={"agent": "calc", "input": "x" * 4096})
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "/problems/payload-too-large"


async def test_a_streamed_body_is_refused_once_it_passes_the_limit(
    make_client: ClientFactory,
) -> None:
    sent = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"agent": "calc", "input": "'
        for _ in range(100):
            sent.append(1)
            yield b"x" * 1024
        yield b'"}'

    async with make_client(max_request_bytes=4096) as client:
        response = await client.post(
            "/runs", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert len(sent) < 10  # refused while reading, not after the whole body
    assert (await client_runs(make_client)) == []


async def client_runs(make_client: ClientFactory) -> list[Any]:
    async with make_client() as client:
        items: list[Any] = (await client.get("/runs")).json()["items"]
        return items


USER_MESSAGE = {"role": "user", "content": "x"}


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("GET", "/runs", {"limit": 0}, None),
        ("GET", "/runs", {"limit": 101}, None),
        ("GET", "/approvals", {"limit": 101}, None),
        ("POST", "/runs", {"wait": 61}, {"agent": "calc", "input": "x"}),
        ("POST", "/runs", {}, {"agent": "calc", "input": "x", "config": {"max_turns": 1001}}),
        (
            "POST",
            "/runs",
            {},
            {"agent": "calc", "input": "x", "config": {"timeout_seconds": 86_401}},
        ),
        (
            "POST",
            "/runs",
            {},
            {"agent": "calc", "input": [{"role": "user", "content": "x"}] * 1001},
        ),
    ],
)
async def test_out_of_range_requests_are_refused_as_validation_errors(
    client: Client, method: str, path: str, params: dict[str, Any], body: Any
) -> None:
    response = await client.request(method, path, params=params, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "/problems/validation-error"


async def test_an_open_service_ignores_a_key_a_client_sends(client: Client) -> None:
    response = await client.get("/runs", headers=bearer("whatever"))
    assert response.status_code == 200
