"""Principals from API keys with tenants and from JWT bearer tokens, and the roles that decide
approvals.

Contract, "Tenants and principals": `tenant/name:key` keys; JWTs verified from a JWKS URL (with
a rotated key fetched again), a PEM public key or an HS256 secret, with `exp`/`nbf` (60 s
leeway), `iss` and `aud`; `alg: none` and an algorithm other than the key's refused (401);
`approver`, `approver:<tool>` and `admin` roles.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.testing import FakeModel, call, calls, text
from app.testing.server import ThreadedServer
from tests.api.conftest import Client, ClientFactory

pytestmark = pytest.mark.anyio

SECRET = "an-hs256-secret-of-thirty-two-bytes-or-more"
ISSUER = "https://login.example.com/"
AUDIENCE = "agent-runs"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "ada", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "iat": now}
    return {key: value for key, value in {**base, **changes}.items() if value is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token PyJWT would not make: unsigned, or HMAC-signed with a public key's PEM."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b""
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def caller_seen(client: Client, token: str) -> tuple[int, MutableMapping[str, Any]]:
    """The status of a request with `token`, and its request log line (who it was)."""
    with structlog.testing.capture_logs() as logs:
        response = await client.get("/agents", headers=bearer(token))
    [entry] = [e for e in logs if e["event"] == "request"]
    return response.status_code, entry


async def test_a_key_names_its_tenant_and_a_key_without_one_is_default_s(
    make_client: ClientFactory,
) -> None:
    keys = "acme/ui:key-of-acme-ui-0123456789, ops:key-of-ops-0123456789"
    async with make_client(api_keys=SecretStr(keys)) as client:
        status, seen = await caller_seen(client, "key-of-acme-ui-0123456789")
        assert (status, seen["caller"], seen["tenant"]) == (200, "ui", "acme")
        status, seen = await caller_seen(client, "key-of-ops-0123456789")
        assert (status, seen["caller"], seen["tenant"]) == (200, "ops", "default")
        assert not any("key-of" in repr(value) for value in seen.values())


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("api_keys", "ac me/ui:k", "API_KEYS: item 1's tenant is not letters"),
        ("admin_api_keys", "root:k, /x:k", "ADMIN_API_KEYS: item 2's tenant"),
        ("jwt_secret", "short", "JWT_SECRET: at least 32 bytes"),
        ("jwt_public_key", "-----BEGIN PUBLIC KEY-----\nno\n", "JWT_PUBLIC_KEY: not a PEM"),
        ("jwt_jwks_url", "file:///etc/passwd", "JWT_JWKS_URL: Invalid JWKS URI scheme"),
    ],
)
async def test_unusable_settings_stop_the_service_from_starting(
    make_client: ClientFactory, setting: str, value: str, message: str
) -> None:
    given: Any = value if setting == "jwt_jwks_url" else SecretStr(value)
    with pytest.raises(ValueError, match=message):
        async with make_client(**{setting: given}):
            pass


async def test_two_key_sources_for_tokens_are_refused(make_client: ClientFactory) -> None:
    both: dict[str, Any] = {
        "jwt_secret": SecretStr(SECRET),
        "jwt_public_key": SecretStr(public_pem(rsa_key())),
    }
    with pytest.raises(ValueError, match="JWT_PUBLIC_KEY and JWT_SECRET: set one"):
        async with make_client(**both):
            pass


@asynccontextmanager
async def hs256_service(make_client: ClientFactory, **more: Any) -> AsyncIterator[Client]:
    settings = {
        "jwt_secret": SecretStr(SECRET),
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        **more,
    }
    async with make_client(**settings) as client:
        yield client


def hs256(**changes: Any) -> str:
    return jwt.encode(claims(**changes), SECRET, algorithm="HS256")


async def test_a_valid_token_names_the_caller_its_tenant_and_its_roles(
    make_client: ClientFactory,
) -> None:
    async with hs256_service(make_client) as client:
        status, seen = await caller_seen(client, hs256(tenant="acme"))
        assert (status, seen["caller"], seen["tenant"]) == (200, "ada", "acme")
        status, seen = await caller_seen(client, hs256())
        assert (status, seen["tenant"]) == (200, "default")
        # Within the minute of leeway either way: clocks differ.
        late = hs256(exp=int(time.time()) - 30, nbf=int(time.time()) + 30)
        assert (await caller_seen(client, late))[0] == 200
        # Without a key or a token, and with a wrong key, nothing is open.
        assert (await client.get("/agents")).status_code == 401
        assert (await caller_seen(client, "not-a-key"))[0] == 401


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (lambda: hs256(exp=int(time.time()) - 120), "expired"),
        (lambda: hs256(nbf=int(time.time()) + 120), "not valid yet"),
        (lambda: hs256(iss="https://evil.example.com/"), "issuer"),
        (lambda: hs256(aud="another-service"), "not meant for this service"),
        (lambda: hs256(exp=None), "no 'exp' claim"),
        (lambda: hs256(sub=None), "no 'sub' claim"),
        (lambda: hs256(tenant="two words"), "not a tenant name"),
        (
            lambda: jwt.encode(claims(), "another-secret-of-thirty-two-bytes-!!", "HS256"),
            "signature",
        ),
        (lambda: hs256()[:-4] + "AAAA", "signature"),
        (lambda: forged({"alg": "none", "typ": "JWT"}, claims(), None), "algorithm"),
        (lambda: forged({"alg": "HS512", "typ": "JWT"}, claims(), SECRET.encode()), "algorithm"),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "wrong-issuer",
        "wrong-audience",
        "no-exp",
        "no-sub",
        "bad-tenant",
        "other-secret",
        "bad-signature",
        "alg-none",
        "other-hmac-alg",
    ],
)
async def test_a_token_this_service_does_not_accept_is_401_saying_why(
    make_client: ClientFactory, token: Any, why: str
) -> None:
    async with hs256_service(make_client) as client:
        presented = token()
        response = await client.get("/agents", headers=bearer(presented))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert why in response.json()["detail"]
    assert presented not in response.text


async def test_an_rsa_public_key_is_not_taken_as_an_hmac_secret(
    make_client: ClientFactory,
) -> None:
    key = rsa_key()
    pem = public_pem(key)
    async with make_client(jwt_public_key=SecretStr(pem)) as client:
        good = jwt.encode(claims(), key, algorithm="RS256")
        assert (await caller_seen(client, good))[0] == 200
        # The classic confusion: the public key, which anyone may have, as an HS256 secret.
        confused = forged({"alg": "HS256", "typ": "JWT"}, claims(), pem.encode())
        response = await client.get("/agents", headers=bearer(confused))
        assert response.status_code == 401
        assert "algorithm" in response.json()["detail"]
        unsigned = forged({"alg": "none"}, claims(), None)
        assert (await client.get("/agents", headers=bearer(unsigned))).status_code == 401


class Jwks:
    """A JWKS endpoint on 127.0.0.1 whose keys a test rotates; it counts its fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        self.down = False

    def publish(self, kid: str) -> rsa.RSAPrivateKey:
        self.keys[kid] = rsa_key()
        return self.keys[kid]

    def token(self, kid: str, **changes: Any) -> str:
        return jwt.encode(claims(**changes), self.keys[kid], "RS256", headers={"kid": kid})

    async def serve(self, request: Request) -> Response:
        self.fetches += 1
        if self.down:
            return Response(status_code=503)
        published = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            published.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return JSONResponse({"keys": published})


@pytest.fixture
def jwks() -> Iterator[tuple[Jwks, str]]:
    endpoint = Jwks()
    app = Starlette(routes=[Route("/.well-known/jwks.json", endpoint.serve)])
    with ThreadedServer(app) as server:
        yield endpoint, f"{server.url}/.well-known/jwks.json"


async def test_a_rotated_key_is_fetched_again_and_the_set_is_cached_meanwhile(
    make_client: ClientFactory, jwks: tuple[Jwks, str]
) -> None:
    endpoint, url = jwks
    endpoint.publish("k1")
    settings: dict[str, Any] = {
        "jwt_jwks_url": url,
        "jwt_audience": AUDIENCE,
        "jwt_jwks_refresh_seconds": 0,
    }
    async with make_client(**settings) as client:
        for _ in range(3):
            assert (await caller_seen(client, endpoint.token("k1")))[0] == 200
        assert endpoint.fetches == 1
        # The issuer rotates: tokens signed by the new key are accepted at once.
        endpoint.publish("k2")
        status, seen = await caller_seen(client, endpoint.token("k2", tenant="acme"))
        assert (status, seen["tenant"]) == (200, "acme")
        assert endpoint.fetches == 2
        # A kid the issuer never published, or no kid at all: refused.
        stranger = jwt.encode(claims(), rsa_key(), "RS256", headers={"kid": "k9"})
        refused = await client.get("/agents", headers=bearer(stranger))
        assert refused.status_code == 401
        assert "not in the JWKS" in refused.json()["detail"]
        no_kid = jwt.encode(claims(), endpoint.keys["k1"], "RS256")
        assert (await client.get("/agents", headers=bearer(no_kid))).status_code == 401


async def test_unknown_kids_do_not_make_the_service_fetch_the_set_each_time(
    make_client: ClientFactory, jwks: tuple[Jwks, str]
) -> None:
    endpoint, url = jwks
    endpoint.publish("k1")
    async with make_client(jwt_jwks_url=url, jwt_jwks_refresh_seconds=600) as client:
        assert (await caller_seen(client, endpoint.token("k1", aud=None)))[0] == 200
        for n in range(5):
            stranger = jwt.encode(claims(aud=None), rsa_key(), "RS256", headers={"kid": f"x{n}"})
            assert (await client.get("/agents", headers=bearer(stranger))).status_code == 401
    assert endpoint.fetches == 1


async def test_a_jwks_that_cannot_be_fetched_is_503_not_401(
    make_client: ClientFactory, jwks: tuple[Jwks, str]
) -> None:
    endpoint, url = jwks
    endpoint.publish("k1")
    endpoint.down = True
    async with make_client(jwt_jwks_url=url) as client:
        response = await client.get("/agents", headers=bearer(endpoint.token("k1", aud=None)))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "JWT_JWKS_URL" in response.json()["detail"]


async def test_a_shared_secret_published_in_a_jwks_signs_nothing(
    make_client: ClientFactory,
) -> None:
    published = {"keys": [{"kty": "oct", "kid": "s", "k": b64(SECRET.encode()), "alg": "HS256"}]}

    async def serve(request: Request) -> Response:
        return JSONResponse(published)

    with ThreadedServer(Starlette(routes=[Route("/jwks", serve)])) as server:
        async with make_client(jwt_jwks_url=f"{server.url}/jwks") as client:
            token = jwt.encode(claims(aud=None), SECRET, "HS256", headers={"kid": "s"})
            response = await client.get("/agents", headers=bearer(token))
    assert response.status_code == 401
    assert "not a public key" in response.json()["detail"]


# Roles


async def parked(client: Client, fake: FakeModel, token: str) -> tuple[str, dict[str, Any]]:
    """A run parked on a `delete_record` call, and the body deciding it."""
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("done")])
    created = await client.post(
        "/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"}, headers=bearer(token)
    )
    run = created.json()
    assert run["status"] == "pending_approval", run
    call_id = run["pending_approvals"][0]["call_id"]
    return f"/runs/{run['id']}/approvals", {"decisions": [{"call_id": call_id, "approved": True}]}


async def test_roles_from_a_token_decide_all_calls_or_one_tool_s(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    async with hs256_service(make_client) as client:
        path, decision = await parked(client, fake, hs256())
        for roles, status in [
            (None, 403),
            (["reader"], 403),
            (["approver:send_email"], 403),
            (["approver:delete_record"], 200),
        ]:
            answer = await client.post(path, json=decision, headers=bearer(hs256(roles=roles)))
            assert answer.status_code == status, (roles, answer.text)
            if status == 403:
                assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["decisions"][0]["decided_by"] == "ada"
        # A role string spaced like an OAuth scope, and a nested claim, name roles too.
        path, decision = await parked(client, fake, hs256())
        answer = await client.post(path, json=decision, headers=bearer(hs256(roles="x approver")))
        assert answer.status_code == 200
    nested = {"jwt_roles_claim": "realm_access.roles", "jwt_tenant_claim": "org.id"}
    async with hs256_service(make_client, **nested) as client:
        path, decision = await parked(client, fake, hs256(org={"id": "acme"}))
        other_tenant = hs256(realm_access={"roles": ["approver"]}, org={"id": "globex"})
        unseen = await client.post(path, json=decision, headers=bearer(other_tenant))
        assert unseen.status_code == 404, unseen.text
        realm = hs256(realm_access={"roles": ["approver"]}, org={"id": "acme"})
        with structlog.testing.capture_logs() as logs:
            answer = await client.post(path, json=decision, headers=bearer(realm))
        assert answer.status_code == 200, answer.text
        assert [e["tenant"] for e in logs if e["event"] == "request"] == ["acme"]


async def test_a_one_tool_approver_is_refused_the_whole_request_if_one_call_is_not_its(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script(
        "m",
        [
            calls(("delete_record", {"record_id": "r1"}), ("delete_record", {"record_id": "r2"})),
            text("done"),
        ],
    )
    async with hs256_service(make_client) as client:
        created = await client.post(
            "/runs",
            params={"wait": 10},
            json={"agent": "calc", "input": "x"},
            headers=bearer(hs256()),
        )
        run = created.json()
        path = f"/runs/{run['id']}/approvals"
        pending = [p["call_id"] for p in run["pending_approvals"]]
        decision = {"decisions": [{"call_id": c, "approved": True} for c in pending]}
        narrow = hs256(roles=["approver:send_email"])
        refused = await client.post(path, json=decision, headers=bearer(narrow))
        assert refused.status_code == 403
        assert "delete_record" in refused.json()["detail"]
        still = (await client.get(f"/runs/{run['id']}", headers=bearer(hs256()))).json()
        assert len(still["pending_approvals"]) == len(pending)


async def test_admin_keys_decide_and_approver_keys_alone_leave_other_routes_open(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    settings: dict[str, Any] = {
        "admin_api_keys": SecretStr("root:key-of-root-0123456789"),
        "approver_api_keys": SecretStr("acme/lead:key-of-lead-0123456789"),
    }
    async with make_client(**settings) as client:
        fake.script("m", [call("delete_record", {"record_id": "r1"}), text("done")])
        run = (
            await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"})
        ).json()
        path = f"/runs/{run['id']}/approvals"
        decision = {
            "decisions": [{"call_id": run["pending_approvals"][0]["call_id"], "approved": True}]
        }
        assert (await client.post(path, json=decision)).status_code == 401
        decided = await client.post(path, json=decision, headers=bearer("key-of-root-0123456789"))
        assert decided.status_code == 200, decided.text
        assert decided.json()["decisions"][0]["decided_by"] == "root"


async def test_an_open_service_ignores_tokens_as_it_ignores_keys(
    make_client: ClientFactory,
) -> None:
    async with make_client() as client:
        response = await client.get("/agents", headers=bearer(hs256()))
    assert response.status_code == 200
