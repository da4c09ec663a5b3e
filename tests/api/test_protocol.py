"""HTTP's own corners: 405 with the path's methods, HEAD on the probes, forged cursors."""

from __future__ import annotations

import base64

import pytest

from tests.api.conftest import Client

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/runs", "GET, POST"),
        ("PUT", "/runs", "GET, POST"),
        ("PUT", "/runs/run_x", "DELETE, GET"),
        ("GET", "/tenants/acme", "DELETE"),
        ("GET", "/runs/run_x/cancel", "POST"),
        ("PATCH", "/sessions/s1", "DELETE, GET"),
        ("POST", "/healthz", "GET, HEAD"),
        ("POST", "/readyz", "GET, HEAD"),
    ],
)
async def test_a_method_the_path_does_not_take_is_405_with_the_path_s_methods(
    client: Client, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, path)

    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["allow"] == allowed
    problem = response.json()
    assert problem["type"] == "/problems/method-not-allowed"
    assert problem["status"] == 405
    assert allowed in problem["detail"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_answer_head(client: Client, path: str) -> None:
    response = await client.head(path)

    assert response.status_code == 200
    assert response.content == b""


def forged(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        forged(b"[" * 2000 + b"]" * 2000),
        forged(b'{"seq":' + b"[" * 150 + b"]" * 150 + b"}"),
        forged(b'{"seq": 1}') + "A" * 1000,
        forged(b'{"seq": -1}'),
        forged(b'{"seq": true}'),
        "%%%",
    ],
)
@pytest.mark.parametrize("path", ["/runs", "/approvals", "/agents"])
async def test_a_forged_cursor_is_422(client: Client, cursor: str, path: str) -> None:
    response = await client.get(path, params={"cursor": cursor})

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"] == [
        {"loc": ["query", "cursor"], "msg": "not a cursor this list gave out"}
    ]
