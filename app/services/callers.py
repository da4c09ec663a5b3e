"""Who asks the services for something, and whose rows they may touch."""

from __future__ import annotations

from dataclasses import dataclass

from app.engine.principal import ANONYMOUS, Principal
from app.store.tenancy import Tenancy


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    tenancy: Tenancy

    @classmethod
    def of(cls, principal: Principal, chosen_tenant: str | None = None) -> Caller:
        """The principal, narrowed to `chosen_tenant` (`?tenant=`) where it may choose one."""
        return cls(principal, Tenancy.of(principal, chosen_tenant))

    @property
    def home(self) -> str:
        """The tenant a session id is looked up in (session ids are per tenant)."""
        return self.tenancy.home(self.principal)


# An open service's caller: every request is `anonymous` of tenant `default`.
ANONYMOUS_CALLER = Caller.of(ANONYMOUS)
