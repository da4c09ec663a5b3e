"""`Idempotency-Key`: an effect on a run happens at most once per key and request body.

The key is reserved in a transaction of its own, so a repeat that arrives while the first
request is still working is told so (409); the effect then binds the key to its run in the
effect's own transaction, so a repeat after it gets the run as it is now.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from app.engine.principal import DEFAULT_TENANT
from app.services.errors import IdempotencyKeyInUse, IdempotencyKeyReused, RunNotFound
from app.services.lifecycle import now
from app.store.database import Database
from app.store.idempotency import IdempotencyRepository
from app.store.models import Run
from app.store.runs import RunRepository
from app.store.tenancy import Tenancy

# A reservation whose request died before binding it frees the key after this long.
STALE_RESERVATION = timedelta(seconds=60)

Effect = Callable[[AsyncSession], Awaitable[Run]]


@dataclass(frozen=True)
class Idempotency:
    """A request's `Idempotency-Key`: keys are the caller's own (its tenant, and `owner`, its
    name; "" on an open service), so two callers never share one."""

    key: str
    request_hash: str
    owner: str = ""
    tenant: str = DEFAULT_TENANT


async def once(
    db: Database,
    scope: str,
    idempotency: Idempotency | None,
    effect: Effect,
    tenancy: Tenancy,
    *,
    ttl: timedelta | None = None,
) -> tuple[Run, bool]:
    """Run `effect` in a transaction, once per key (one older than `ttl` is forgotten): the
    run, and False for a repeat (read as the caller may see it)."""
    if idempotency is not None:
        earlier = await _reserve(db, scope, idempotency, tenancy, ttl)
        if earlier is not None:
            return earlier, False
    try:
        async with db.session_scope() as session:
            run = await effect(session)
            if idempotency is not None:
                await IdempotencyRepository(session, idempotency.tenant).bind(
                    idempotency.owner, scope, idempotency.key, run.id
                )
    except Exception:
        # Rolled back: free the key for a retry. (A cancelled request keeps its reservation:
        # its commit may have happened, and an unbound one goes stale and is taken over.)
        if idempotency is not None:
            with anyio.CancelScope(shield=True):
                async with db.session_scope() as session:
                    await IdempotencyRepository(session, idempotency.tenant).release(
                        idempotency.owner, scope, idempotency.key
                    )
        raise
    return run, True


async def _reserve(
    db: Database, scope: str, idempotency: Idempotency, tenancy: Tenancy, ttl: timedelta | None
) -> Run | None:
    """Reserve the key, or answer for the request that holds it."""
    async with db.session_scope() as session:
        keys = IdempotencyRepository(session, idempotency.tenant)
        stamp = now()
        owner, key = idempotency.owner, idempotency.key
        if await keys.reserve(owner, scope, key, idempotency.request_hash, stamp):
            return None
        held = await keys.get(owner, scope, key, for_update=True)
        assert held is not None
        if ttl is not None and stamp - held.created_at >= ttl:
            # Forgotten, though retention has not deleted it yet: the key is this request's.
            held.request_hash, held.run_id, held.created_at = idempotency.request_hash, None, stamp
            return None
        if held.request_hash != idempotency.request_hash:
            raise IdempotencyKeyReused()
        if held.run_id is None:
            if stamp - held.created_at < STALE_RESERVATION:
                raise IdempotencyKeyInUse()
            held.created_at = stamp  # its first request died: this one takes over
            return None
        run = await RunRepository(session, tenancy).get(held.run_id)
        if run is None:
            raise RunNotFound(f"run {held.run_id} of this Idempotency-Key no longer exists")
        return run
