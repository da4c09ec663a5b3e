"""Every route, called by principals of two tenants in every role, by none and by a wrong one
(contract, "Tenants and principals"): what each may see and do, on the database the suite runs on.

The resources are acme's. A principal of acme (by API key or by token) reaches them; one of
globex is told they are not there, exactly as for an unknown id; an admin reaches them from its
own tenant; deciding needs a role that decides the call's tool. A route added to the app and
missing here fails `test_the_matrix_covers_every_route`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from fastapi.routing import APIRoute
from pydantic import SecretStr

from app.testing import FakeModel, Rule, Script, call, text
from tests.api.conftest import Client, ClientFactory

pytestmark = pytest.mark.anyio

SECRET = "a-matrix-hs256-secret-of-thirty-two-bytes"
ACME_KEY, GLOBEX_KEY = "acme-ui-key-0123456789", "globex-ui-key-0123456789"
ACME_LEAD, GLOBEX_LEAD = "acme-lead-key-0123456789", "globex-lead-key-0123456789"
ROOT_KEY = "ops-root-key-0123456789"
SETTINGS: dict[str, Any] = {
    "api_keys": SecretStr(f"acme/ui:{ACME_KEY}, globex/ui:{GLOBEX_KEY}"),
    "approver_api_keys": SecretStr(f"acme/lead:{ACME_LEAD}, globex/lead:{GLOBEX_LEAD}"),
    "admin_api_keys": SecretStr(f"ops/root:{ROOT_KEY}"),
    "jwt_secret": SecretStr(SECRET),
}
# Parked runs ask for `delete_record`; plain ones answer at once.
SCRIPT = Script(
    rules=[
        Rule(match="^park", replies=[call("delete_record", {"record_id": "r1"}), text("done")]),
        Rule(replies=[text("ok")]),
    ]
)


def token(tenant: str, *roles: str, expired: bool = False) -> str:
    now = int(time.time())
    exp = now - 3600 if expired else now + 600
    claims = {"sub": "jwt-user", "tenant": tenant, "roles": list(roles), "exp": exp}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@dataclass(frozen=True)
class Who:
    label: str
    bearer: str | None
    tenant: str | None = None  # None: not let in
    name: str = "jwt-user"
    admin: bool = False
    decides: frozenset[str] = frozenset()  # tools whose calls it decides; "*": any

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bearer}"} if self.bearer else {}

    @property
    def in_(self) -> bool:
        return self.tenant is not None

    @property
    def reaches_acme(self) -> bool:
        return self.admin or self.tenant == "acme"


PRINCIPALS = [
    Who("no key", None),
    Who("a wrong key", "not-a-key-of-this-service"),
    Who("an expired token", token("acme", "admin", expired=True)),
    Who("acme's key", ACME_KEY, "acme", "ui"),
    Who("acme's token", token("acme"), "acme"),
    Who("acme's approver", ACME_LEAD, "acme", "lead", decides=frozenset({"*"})),
    Who(
        "acme's delete_record approver",
        token("acme", "approver:delete_record"),
        "acme",
        decides=frozenset({"delete_record"}),
    ),
    Who(
        "acme's refund approver",
        token("acme", "approver:refund"),
        "acme",
        decides=frozenset({"refund"}),
    ),
    Who("globex's key", GLOBEX_KEY, "globex", "ui"),
    Who("globex's approver", GLOBEX_LEAD, "globex", "lead", decides=frozenset({"*"})),
    Who("globex's token with an unknown role", token("globex", "reader"), "globex"),
    Who("an admin", ROOT_KEY, "ops", "root", admin=True, decides=frozenset({"*"})),
    Who("an admin's token", token("ops", "admin"), "ops", admin=True, decides=frozenset({"*"})),
]


@dataclass
class Acme:
    """What acme holds when a principal comes: a run waiting for a decision, another to cancel,
    a completed one, and their sessions."""

    parked: dict[str, Any]
    to_cancel: dict[str, Any]
    completed: dict[str, Any]


async def acme_resources(client: Client) -> Acme:
    headers = {"Authorization": f"Bearer {ACME_KEY}"}

    async def run(text_input: str, session: str) -> dict[str, Any]:
        body = {"agent": "calc", "input": text_input, "session_id": session}
        answer = await client.post("/runs", params={"wait": 10}, json=body, headers=headers)
        created: dict[str, Any] = answer.json()
        assert created["status"] in {"pending_approval", "completed"}, created
        return created

    return Acme(
        await run("park", "s-parked"), await run("park", "s-cancel"), await run("hi", "s-done")
    )


@dataclass
class Expect:
    method: str
    route: str  # the route's template, as the app declares it
    path: str
    status: int
    body: Any = None
    params: dict[str, Any] | None = None


def expectations(who: Who, acme: Acme) -> Iterator[Expect]:
    """What each route answers `who`."""
    parked, to_cancel, done = acme.parked["id"], acme.to_cancel["id"], acme.completed["id"]

    def keyed(status: int) -> int:
        return status if who.in_ else 401

    def acme_s(status: int) -> int:
        return keyed(status if who.reaches_acme else 404)

    for method in ("GET", "HEAD"):
        yield Expect(method, "/healthz", "/healthz", 200)
        yield Expect(method, "/readyz", "/readyz", 200)
    yield Expect("GET", "/console", "/console", 200)
    yield Expect("GET", "/console/{name}", "/console/app.js", 200)
    yield Expect("GET", "/openapi.json", "/openapi.json", keyed(200))
    yield Expect("GET", "/docs", "/docs", keyed(200))
    yield Expect("GET", "/redoc", "/redoc", keyed(200))
    yield Expect("GET", "/docs/assets/{name}", "/docs/assets/favicon.png", keyed(200))
    yield Expect("GET", "/metrics", "/metrics", keyed(200))
    yield Expect("GET", "/me", "/me", keyed(200))
    yield Expect("GET", "/agents", "/agents", keyed(200))
    yield Expect("GET", "/agents/{name}", "/agents/calc", keyed(200))
    yield Expect("GET", "/runs", "/runs", keyed(200))
    yield Expect("GET", "/runs/{run_id}", f"/runs/{parked}", acme_s(200))
    yield Expect("GET", "/runs/{run_id}/events", f"/runs/{done}/events", acme_s(200))
    yield Expect("GET", "/approvals", "/approvals", keyed(200))
    # Session ids are per tenant: an admin names the tenant whose session it means.
    acme_only = {"tenant": "acme"}
    own_session = keyed(200 if who.tenant == "acme" else 404)
    yield Expect("GET", "/sessions/{session_id}", "/sessions/s-parked", own_session)
    yield Expect(
        "GET", "/sessions/{session_id}", "/sessions/s-parked", acme_s(200), params=acme_only
    )
    yield Expect(
        "DELETE", "/sessions/{session_id}", "/sessions/s-done", acme_s(204), params=acme_only
    )
    yield Expect("POST", "/runs/{run_id}/cancel", f"/runs/{to_cancel}/cancel", acme_s(202))
    yield Expect("DELETE", "/runs/{run_id}", f"/runs/{done}", acme_s(204))
    # Erasing a whole tenant is an admin's (a tenant with nothing: the matrix's rows stay).
    yield Expect(
        "DELETE", "/tenants/{tenant}", "/tenants/initech", keyed(200 if who.admin else 403)
    )
    call_id = acme.parked["pending_approvals"][0]["call_id"]
    decision = {"decisions": [{"call_id": call_id, "approved": True}]}
    if not who.decides:
        deciding = 403  # whoever holds no deciding role, whatever the run
    elif not who.reaches_acme:
        deciding = 404
    elif who.decides & {"*", "delete_record"}:
        deciding = 200
    else:
        deciding = 403  # its role decides another tool's calls
    yield Expect(
        "POST", "/runs/{run_id}/approvals", f"/runs/{parked}/approvals", keyed(deciding), decision
    )
    yield Expect("POST", "/runs", "/runs", keyed(201), {"agent": "calc", "input": "hi"})


@pytest.mark.parametrize("who", PRINCIPALS, ids=[who.label for who in PRINCIPALS])
async def test_what_each_principal_may_see_and_do(
    who: Who, make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", SCRIPT)
    async with make_client(**SETTINGS) as client:
        acme = await acme_resources(client)
        for expected in expectations(who, acme):
            answer = await client.request(
                expected.method,
                expected.path,
                json=expected.body,
                params=expected.params,
                headers=who.headers,
            )
            where = (who.label, expected.method, expected.path, answer.text[:300])
            assert answer.status_code == expected.status, where
            if answer.status_code >= 400:
                assert answer.headers["content-type"] == "application/problem+json", where
            if answer.status_code == 201:
                created = answer.json()
                assert (created["tenant"], created["created_by"]) == (who.tenant, who.name)
        if not who.in_:
            return
        await lists_hold_only_what_is_theirs(client, who, acme)


async def lists_hold_only_what_is_theirs(client: Client, who: Who, acme: Acme) -> None:
    """`GET /runs`, `GET /approvals` and `GET /me` after the matrix's requests: a principal
    lists its own tenant's rows (the run it created among them), an admin every tenant's."""
    runs = (await client.get("/runs", params={"limit": 100}, headers=who.headers)).json()["items"]
    tenants = {run["tenant"] for run in runs}
    if who.admin:
        assert tenants == {"acme", "ops"}, tenants
        narrowed = await client.get("/runs", params={"tenant": "acme"}, headers=who.headers)
        assert {run["tenant"] for run in narrowed.json()["items"]} == {"acme"}
    else:
        assert tenants == {who.tenant}, tenants
        # Naming another tenant narrows nothing for one who is not an admin.
        elsewhere = await client.get("/runs", params={"tenant": "ops"}, headers=who.headers)
        assert elsewhere.status_code == 200
        assert {run["tenant"] for run in elsewhere.json()["items"]} <= {who.tenant}
    ids = {run["id"] for run in runs}
    assert (acme.parked["id"] in ids) == who.reaches_acme
    assert any(run["created_by"] == who.name for run in runs if run["tenant"] == who.tenant)

    every = {"status": "all"}
    approvals = await client.get("/approvals", params=every, headers=who.headers)
    listed = {(item["run_id"], item["tenant"]) for item in approvals.json()["items"]}
    if who.reaches_acme:
        assert (acme.parked["id"], "acme") in listed
    else:
        assert listed == set()

    me = (await client.get("/me", headers=who.headers)).json()
    assert (me["name"], me["tenant"], "admin" in me["roles"]) == (who.name, who.tenant, who.admin)


def app_routes(client: Client) -> set[tuple[str, str]]:
    """Each (method, path) the app serves, the routers it includes walked into."""
    found: set[tuple[str, str]] = set()

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.update((method, route.path) for method in route.methods or ())
            # FastAPI keeps an included router whole, behind a route of its own.
            included = getattr(route, "original_router", None)
            if included is not None:
                walk(included.routes)

    walk(client.app.routes)
    return found


async def test_the_matrix_covers_every_route(make_client: ClientFactory, fake: FakeModel) -> None:
    fake.script("m", SCRIPT)
    async with make_client(**SETTINGS) as client:
        acme = await acme_resources(client)
        covered = {(e.method, e.route) for e in expectations(PRINCIPALS[-1], acme)}
        served = app_routes(client)
        assert len(served) > 20
        assert served == covered
        for expected in expectations(PRINCIPALS[-1], acme):
            template = re.sub(r"\{[^}]+\}", "[^/]+", expected.route)
            assert re.fullmatch(template, expected.path), expected
