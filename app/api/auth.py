"""Who calls: a principal from an API key or a JWT bearer token (contract, "Operating it" and
"Tenants and principals").

Keys are compared in constant time, against every configured key, so neither a key nor which
key matched shows in the timing. A bearer that is no key is verified as a JWT when the service
is told how (`app.api.tokens`). Only a principal's name and tenant ever leave this module: as
`decided_by` on approvals and in the request log.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.tokens import InvalidAuthSettings, InvalidToken, KeysUnavailable, TokenVerifier
from app.engine.principal import (
    ADMIN,
    ANONYMOUS,
    APPROVER,
    DEFAULT_TENANT,
    Principal,
    is_tenant_name,
)
from app.settings import Settings

CHALLENGE = 'Bearer realm="agent-runs"'

bearer = HTTPBearer(
    auto_error=False,
    description="An API key (`API_KEYS`, `APPROVER_API_KEYS`, `ADMIN_API_KEYS`) or a JWT, when "
    "the service sets them.",
)


class InvalidApiKeys(InvalidAuthSettings):
    """`API_KEYS`, `APPROVER_API_KEYS` or `ADMIN_API_KEYS` cannot be read."""


class Unauthenticated(Exception):
    """No key, or a key that is not configured: 401."""

    def __init__(self, detail: str, *, invalid_token: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.challenge = f'{CHALLENGE}, error="invalid_token"' if invalid_token else CHALLENGE


class Forbidden(Exception):
    """A valid key that may not do this: 403."""


class AuthenticationUnavailable(Exception):
    """What verifies a token cannot be reached: 503."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    principal: Principal
    secret: bytes


# A bare key's name: its kind and its position in the setting.
_BARE_NAMES = {"API_KEYS": "key", "APPROVER_API_KEYS": "approver", "ADMIN_API_KEYS": "admin"}


def parse_keys(raw: str, *, setting: str, roles: frozenset[str]) -> list[ApiKey]:
    """`tenant/name:key`, `name:key` or bare `key` items, comma-separated; bare keys are named
    by position, keys without a tenant are `default`'s."""
    keys = []
    for position, item in enumerate((part.strip() for part in raw.split(",")), start=1):
        if not item:
            continue
        name, separator, secret = item.partition(":")
        if not separator:
            name, secret = f"{_BARE_NAMES[setting]}-{position}", item
        tenant, slash, name = name.strip().rpartition("/")
        if not name.strip() or not secret:
            raise InvalidApiKeys(f"{setting}: item {position} has an empty name or key")
        if not slash:
            tenant = DEFAULT_TENANT
        elif not is_tenant_name(tenant):
            raise InvalidApiKeys(
                f"{setting}: item {position}'s tenant is not letters, digits, '-' and '_'"
            )
        keys.append(ApiKey(Principal(name.strip(), tenant, roles), secret.encode()))
    return keys


class Keys:
    """The configured keys and token verifier; with neither, the service is open."""

    def __init__(
        self,
        callers: list[ApiKey],
        approvers: list[ApiKey],
        admins: list[ApiKey],
        tokens: TokenVerifier,
    ) -> None:
        self._all = [*callers, *approvers, *admins]
        self.tokens = tokens if tokens.configured else None
        self.configured = bool(self._all) or self.tokens is not None
        # Approver and admin keys alone guard decisions; API keys or tokens guard every route.
        self.callers_required = bool(callers) or self.tokens is not None
        # Roles are enforced once something can grant one; before that, any caller decides.
        self.roles_required = bool(approvers or admins) or self.tokens is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> Keys:
        def read(setting: str, *roles: str) -> list[ApiKey]:
            value = getattr(settings, setting.lower())
            secret = value.get_secret_value() if value is not None else ""
            return parse_keys(secret, setting=setting, roles=frozenset(roles))

        return cls(
            read("API_KEYS"),
            read("APPROVER_API_KEYS", APPROVER),
            read("ADMIN_API_KEYS", ADMIN),
            TokenVerifier(settings),
        )

    def match(self, presented: str) -> ApiKey | None:
        candidate = presented.encode()
        found = None
        for key in self._all:  # no early exit: every key is compared
            if hmac.compare_digest(candidate, key.secret):
                found = key
        return found

    async def principal(self, presented: str) -> Principal:
        """The principal of a bearer: a configured key's, or a valid token's."""
        key = self.match(presented)
        if key is not None:
            return key.principal
        if self.tokens is None:
            raise Unauthenticated("The API key is not valid.", invalid_token=True)
        try:
            return await self.tokens.principal(presented)
        except InvalidToken as exc:
            raise Unauthenticated(str(exc), invalid_token=True) from exc
        except KeysUnavailable as exc:
            raise AuthenticationUnavailable(str(exc)) from exc


Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def _keys(request: Request) -> Keys:
    keys: Keys = request.app.state.keys
    return keys


async def _identify(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal | None:
    keys = _keys(request)
    if credentials is None or not keys.configured:
        return None  # an open service ignores whatever key a client sends
    principal = await keys.principal(credentials.credentials)
    request.state.principal = principal
    # For `decided_by` and the request log; never the key or the token.
    request.state.caller = principal.name
    request.state.tenant = principal.tenant
    return principal


async def authenticate(request: Request, credentials: Credentials) -> None:
    """Every route but the health checks: a valid key or token when `API_KEYS` or a JWT
    key source is set."""
    principal = await _identify(request, credentials)
    if principal is None and _keys(request).callers_required:
        raise Unauthenticated(
            "This service needs an API key: Authorization: Bearer <key>.", invalid_token=False
        )


async def authorize_approver(request: Request, credentials: Credentials) -> None:
    """Deciding approvals: a principal with a role that decides some calls, once roles are
    enforced (which calls, by tool, is the approval service's to check)."""
    keys = _keys(request)
    principal = await _identify(request, credentials)
    if not keys.roles_required:
        return
    if principal is None:
        raise Unauthenticated(
            "Deciding approvals needs an approver's API key.", invalid_token=False
        )
    if not principal.decides_some:
        raise Forbidden(f"{principal.name!r} may not decide approvals.")


async def authorize_admin(request: Request, credentials: Credentials) -> None:
    """Acting on a whole tenant: an admin, once any key or token is configured (an open
    service lets anyone, as it does everything else)."""
    keys = _keys(request)
    principal = await _identify(request, credentials)
    if not keys.configured:
        return
    if principal is None:
        raise Unauthenticated("This needs an admin's API key.", invalid_token=False)
    if not principal.is_admin:
        raise Forbidden(f"{principal.name!r} is not an admin.")


def principal_of(request: Request) -> Principal:
    """The caller, once authenticated: `anonymous` of tenant `default` on an open service."""
    found = getattr(request.state, "principal", None)
    return found if isinstance(found, Principal) else ANONYMOUS


def decision_rule(request: Request) -> Callable[[str], bool] | None:
    """Which tools' calls the caller may decide; None: any, as roles are not enforced."""
    return principal_of(request).may_decide if _keys(request).roles_required else None


Authenticated = Depends(authenticate)
Approver = Depends(authorize_approver)
Admin = Depends(authorize_admin)
