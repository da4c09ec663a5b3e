"""`/me`: who the service takes the caller for, so a UI can show it and offer what its roles
allow (the console's tenant filter for admins)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.auth import principal_of
from app.api.schemas import MeOut

router = APIRouter(tags=["principals"])


@router.get("/me")
async def get_me(request: Request) -> MeOut:
    """The caller's principal: its name, tenant and roles (`anonymous` of tenant `default`
    on an open service). A token's claims stay with the token."""
    principal = principal_of(request)
    return MeOut(name=principal.name, tenant=principal.tenant, roles=sorted(principal.roles))
