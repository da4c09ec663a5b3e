"""Whose rows a query may touch (contract, "Tenants and principals"). The repositories that
read a tenant's rows are given a `Tenancy` when they are made and filter by it in SQL, so no
route or service can forget it: another tenant's row is not found, exactly as an unknown one."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.engine.principal import ANONYMOUS_NAME, Principal
from app.store.database import lock_for_transaction
from app.store.models import Run

# No tenant is named so (a name has at least one character): a filter on it matches no row.
_NO_TENANT = ""


@dataclass(frozen=True, slots=True)
class Tenancy:
    """One tenant's rows, or (`tenant` None: admins and executors) every tenant's."""

    tenant: str | None

    @classmethod
    def of(cls, principal: Principal, chosen: str | None = None) -> Tenancy:
        """What `principal` may touch, narrowed to the `chosen` tenant (`?tenant=`): an admin
        any tenant's rows, anyone else its own tenant's only (another chosen: nothing)."""
        if principal.is_admin:
            return cls(chosen)
        if chosen is None or chosen == principal.tenant:
            return cls(principal.tenant)
        return cls(_NO_TENANT)

    def admits(self, column: InstrumentedAttribute[str]) -> ColumnElement[bool]:
        return true() if self.tenant is None else column == self.tenant

    def home(self, principal: Principal) -> str:
        """The one tenant whose session a session id names: the chosen one, else the caller's.
        Session ids are per tenant, so an admin reads another tenant's with `?tenant=`."""
        return principal.tenant if self.tenant is None else self.tenant


EVERY_TENANT = Tenancy(None)


async def lock_tenant(session: AsyncSession, tenant: str) -> None:
    """Hold the tenant's lock until the transaction ends: its count of active runs and the
    run it adds then agree."""
    await lock_for_transaction(session, f"tenant:{tenant}")


def acting_for(run: Run) -> Principal:
    """The principal a run acts for: its creator, as stored with it."""
    if run.principal is None:
        return Principal(ANONYMOUS_NAME, run.tenant)
    return Principal.from_json(run.principal)
