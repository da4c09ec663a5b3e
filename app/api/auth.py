"""API keys: who may call, and who may decide approvals (contract, "Operating it").

Keys are compared in constant time, against every configured key, so neither a key nor which
key matched shows in the timing. Only a key's name ever leaves this module: as `decided_by` on
approvals and in the request log.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.settings import Settings

CHALLENGE = 'Bearer realm="agent-runs"'

bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `API_KEYS` or `APPROVER_API_KEYS`, when the service sets them.",
)


class InvalidApiKeys(ValueError):
    """`API_KEYS` or `APPROVER_API_KEYS` cannot be read."""


class Unauthenticated(Exception):
    """No key, or a key that is not configured: 401."""

    def __init__(self, detail: str, *, invalid_token: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.challenge = f'{CHALLENGE}, error="invalid_token"' if invalid_token else CHALLENGE


class Forbidden(Exception):
    """A valid key that may not do this: 403."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    secret: bytes
    approver: bool


def parse_keys(raw: str, *, approver: bool) -> list[ApiKey]:
    """`name:key` or bare `key` items, comma-separated; bare keys are named by position."""
    kind = "approver" if approver else "key"
    keys = []
    for position, item in enumerate((part.strip() for part in raw.split(",")), start=1):
        if not item:
            continue
        name, separator, secret = item.partition(":")
        if not separator:
            name, secret = f"{kind}-{position}", item
        if not name.strip() or not secret:
            setting = "APPROVER_API_KEYS" if approver else "API_KEYS"
            raise InvalidApiKeys(f"{setting}: item {position} has an empty name or key")
        keys.append(ApiKey(name.strip(), secret.encode(), approver))
    return keys


class Keys:
    """The configured keys; with none, the service is open."""

    def __init__(self, callers: list[ApiKey], approvers: list[ApiKey]) -> None:
        self.callers_required = bool(callers)
        self.approvers_required = bool(approvers)
        self._all = [*callers, *approvers]
        self.configured = bool(self._all)

    @classmethod
    def from_settings(cls, settings: Settings) -> Keys:
        def read(value: object, *, approver: bool) -> list[ApiKey]:
            secret = getattr(value, "get_secret_value", lambda: "")()
            return parse_keys(secret, approver=approver)

        return cls(
            read(settings.api_keys, approver=False),
            read(settings.approver_api_keys, approver=True),
        )

    def match(self, presented: str) -> ApiKey | None:
        candidate = presented.encode()
        found = None
        for key in self._all:  # no early exit: every key is compared
            if hmac.compare_digest(candidate, key.secret):
                found = key
        return found


Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def _keys(request: Request) -> Keys:
    keys: Keys = request.app.state.keys
    return keys


def _identify(request: Request, credentials: HTTPAuthorizationCredentials | None) -> ApiKey | None:
    keys = _keys(request)
    if credentials is None or not keys.configured:
        return None  # an open service ignores whatever key a client sends
    key = keys.match(credentials.credentials)
    if key is None:
        raise Unauthenticated("The API key is not valid.", invalid_token=True)
    request.state.caller = key.name  # for `decided_by` and the request log; never the key
    return key


async def authenticate(request: Request, credentials: Credentials) -> None:
    """Every route but the health checks: a valid key when `API_KEYS` is set."""
    key = _identify(request, credentials)
    if key is None and _keys(request).callers_required:
        raise Unauthenticated(
            "This service needs an API key: Authorization: Bearer <key>.", invalid_token=False
        )


async def authorize_approver(request: Request, credentials: Credentials) -> None:
    """Deciding approvals: an approver's key when `APPROVER_API_KEYS` is set."""
    keys = _keys(request)
    key = _identify(request, credentials)
    if not keys.approvers_required:
        return
    if key is None:
        raise Unauthenticated(
            "Deciding approvals needs an approver's API key.", invalid_token=False
        )
    if not key.approver:
        raise Forbidden(f"The key {key.name!r} may not decide approvals.")


Authenticated = Depends(authenticate)
Approver = Depends(authorize_approver)
