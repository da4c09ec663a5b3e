"""Taking and keeping runs: an executor claims queued runs (and takes over those whose lease
expired) in one statement, its heartbeat renews its leases, and a SQLite process that starts
ends the leases of the dead process before it. What happens to a run while it is held, and how
a lease ends, is `app.store.lifecycle`'s."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any, cast

from sqlalchemy import Integer, Table, and_, bindparam, case, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.engine.state import RunStatus
from app.store.conversation import expand
from app.store.models import Run
from app.store.runs import waits_for_its_session

_RUNS = cast(Table, Run.__table__)


@dataclass(frozen=True, slots=True)
class Claim:
    """A run an executor took, and the lease token that fences its writes."""

    run_id: str
    lease_token: int
    takeovers: int = 0  # of the run, this claim's included
    taken_over: bool = False  # this claim took the run from a lost executor
    # The run as claimed, so a driver needs no read of its own; not part of the claim's identity.
    run: Run | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Renewal:
    """What a heartbeat found: the runs whose cancel was requested, and the runs another
    executor took over (their drivers must stop)."""

    cancel_requested: list[str]
    taken: set[str]


@cache
def _claim_statement() -> Any:
    """The claim, built once: building it costs far more than running it (about 2 ms in the
    ORM). Parameters: `worker`, `limit`, `now`, `expires`."""
    now = bindparam("now", type_=Run.lease_expires_at.type)
    claimable = or_(
        and_(Run.status == RunStatus.QUEUED, ~waits_for_its_session()),
        and_(Run.status == RunStatus.RUNNING, Run.lease_expires_at < now),
    )
    # Claiming a running run whose lease expired is a takeover, unless this executor held it
    # (the database was away longer than the lease): that counts towards no bound.
    worker = bindparam("worker", type_=Run.claimed_by.type)
    takeover = and_(Run.status == RunStatus.RUNNING, Run.claimed_by.is_distinct_from(worker))
    picked = (
        # Named apart from `runs.seq`: SQLite's RETURNING drops table names, and `seq = seq`
        # would match every picked row.
        select(Run.seq.label("picked_seq"), takeover.label("takeover"))
        .where(claimable)
        # In queue rank: tenants in turn (`app.store.lifecycle.queue_rank`), each in order.
        .order_by(Run.queue_rank, Run.seq)
        .limit(bindparam("limit", type_=Integer()))
        .with_for_update(skip_locked=True)
        .cte("picked")
        # Computed once, before the update: the flag must read the row as it was.
        .prefix_with("MATERIALIZED")
    )
    # SQLite's RETURNING names only the updated table; a subquery may read the pick.
    was_takeover = (
        select(picked.c.takeover).where(picked.c.picked_seq == Run.seq).correlate(Run)
    ).scalar_subquery()
    return (
        update(Run)
        .where(Run.seq == picked.c.picked_seq, claimable)
        .values(
            status=RunStatus.RUNNING,
            claimed_by=worker,
            lease_token=Run.lease_token + 1,
            lease_expires_at=bindparam("expires", type_=Run.lease_expires_at.type),
            takeovers=Run.takeovers + case((picked.c.takeover, 1), else_=0),
            updated_at=now,
        )
        .returning(Run, was_takeover)
        .execution_options(synchronize_session=False)
    )


class Leases:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(
        self, worker: str, *, limit: int, now: datetime, lease_seconds: float
    ) -> list[Claim]:
        """Take up to `limit` runs, in one statement: queued ones whose session has no earlier
        unfinished run, and running ones whose lease expired. The rows are picked with SKIP
        LOCKED, and the update's guard repeats the pick's condition (SQLite ignores FOR UPDATE
        but serves a single process). Each claim carries its run as the claim left it; the
        claims come in queue order."""
        expires = now + timedelta(seconds=lease_seconds)
        parameters = {"worker": worker, "limit": limit, "now": now, "expires": expires}
        result = await self.session.execute(_claim_statement(), parameters)
        # RETURNING keeps no order; the executor starts its claims in the queue's.
        claimed = sorted(result.all(), key=lambda row: (row[0].queue_rank, row[0].seq))
        await expand(self.session, [run for run, _ in claimed])
        return [
            Claim(run.id, run.lease_token, run.takeovers, taken_over=bool(taken_over), run=run)
            for run, taken_over in claimed
        ]

    async def renew_leases(self, claims: Iterable[Claim], *, expires_at: datetime) -> Renewal:
        """Extend the leases these claims still hold (fenced by their tokens, like every
        write of a driver)."""
        held = [(claim.run_id, claim.lease_token) for claim in claims]
        if not held:
            return Renewal([], set())
        # The rows are locked in the order of their ids, as every write of several runs in
        # one transaction takes them (the group commit, the start of claimed runs): in
        # another order, renewing beside a group's checkpoints could deadlock.
        locked = (
            select(_RUNS.c.id)
            .where(tuple_(_RUNS.c.id, _RUNS.c.lease_token).in_(held))
            .where(_RUNS.c.status == RunStatus.RUNNING)
            .order_by(_RUNS.c.id)
            .with_for_update()
            .subquery()
        )
        result = await self.session.execute(
            update(_RUNS)
            .where(_RUNS.c.id == locked.c.id)
            .values(lease_expires_at=expires_at)
            .returning(_RUNS.c.id, _RUNS.c.cancel_requested)
        )
        rows = result.all()
        renewed = {run_id for run_id, _ in rows}
        cancels = [run_id for run_id, cancel in rows if cancel]
        missing = {run_id: token for run_id, token in held if run_id not in renewed}
        if not missing:
            return Renewal(cancels, set())
        # Rested meanwhile (still this claim's token), or taken over (a newer token).
        current = await self.session.execute(
            select(Run.id, Run.lease_token).where(Run.id.in_(missing))
        )
        tokens: dict[str, int] = dict(current.all())
        taken = {run_id for run_id, token in missing.items() if tokens.get(run_id) != token}
        return Renewal(cancels, taken)

    async def expire_leases(self, now: datetime) -> int:
        """End every lease now: for when no executor can hold one (the only process that may
        use a SQLite file is starting, so whoever held them is dead). The next claim takes
        the runs over. How many there were."""
        result = await self.session.execute(
            update(_RUNS)
            .where(_RUNS.c.status == RunStatus.RUNNING, _RUNS.c.lease_expires_at > now)
            .values(lease_expires_at=now)
        )
        return int(getattr(result, "rowcount", 0))
