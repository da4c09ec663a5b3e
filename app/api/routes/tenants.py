"""`/tenants/{tenant}`: an admin erases all of one tenant's data."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.api.auth import Admin
from app.api.deps import RunsDep, problems
from app.api.schemas import TenantErased
from app.engine.principal import TENANT_PATTERN

router = APIRouter(prefix="/tenants", tags=["tenants"])


@router.delete("/{tenant}", responses=problems(403, 409, 422), dependencies=[Admin])
async def erase_tenant(
    tenant: Annotated[str, Path(pattern=TENANT_PATTERN, max_length=64)], runs: RunsDep
) -> TenantErased:
    """Forget every run (with everything of it), session and idempotency key of the tenant
    (admins only): for a customer who leaves. Refused while a run of it has not ended (cancel
    them first). Revoke the tenant's keys first, or runs it creates meanwhile stay. Done in
    short transactions: a request cut off part way is repeated to finish."""
    erased = await runs.erase_tenant(tenant)
    return TenantErased(
        tenant=tenant,
        runs=erased.runs,
        sessions=erased.sessions,
        idempotency_keys=erased.idempotency_keys,
    )
