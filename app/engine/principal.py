"""Who calls the service: a principal, its tenant and its roles (contract, "Tenants and
principals").

The engine only carries principals to the code that asks for them; the API makes them from API
keys and bearer tokens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

DEFAULT_TENANT = "default"
ANONYMOUS_NAME = "anonymous"

APPROVER = "approver"
ADMIN = "admin"
_APPROVER_OF = "approver:"

TENANT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_TENANT_NAME = re.compile(TENANT_PATTERN)


def is_tenant_name(name: str) -> bool:
    """Letters, digits, `-` and `_` (at most 64): safe in a URL, a log line and a label."""
    return _TENANT_NAME.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller: `claims` are a bearer token's (empty for an API key), read-only."""

    name: str
    tenant: str = DEFAULT_TENANT
    roles: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> dict[str, Any]:
        """What a run stores of the principal that created it."""
        return {
            "name": self.name,
            "tenant": self.tenant,
            "roles": sorted(self.roles),
            "claims": dict(self.claims),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Principal:
        return cls(
            str(data["name"]),
            str(data.get("tenant", DEFAULT_TENANT)),
            frozenset(data.get("roles", ())),
            MappingProxyType(dict(data.get("claims", {}))),
        )

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    def may_decide(self, tool: str) -> bool:
        """Whether it may decide a call of `tool` (admins and approvers decide any)."""
        return bool({ADMIN, APPROVER, f"{_APPROVER_OF}{tool}"} & self.roles)

    @property
    def decides_some(self) -> bool:
        """Whether some call is its to decide, before knowing which tool a call is of."""
        return self.is_admin or any(
            role == APPROVER or role.startswith(_APPROVER_OF) for role in self.roles
        )


ANONYMOUS = Principal(ANONYMOUS_NAME)
