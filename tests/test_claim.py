"""The claim: one statement that picks runs and takes them, telling takeovers apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from sqlalchemy import select

from app.engine.state import RunStatus
from app.store.database import Database
from app.store.leases import Claim, Leases
from app.store.models import Run

pytestmark = pytest.mark.anyio


def stored_run(run_id: str, status: RunStatus, **values: Any) -> Run:
    stamp = datetime.now(UTC)
    defaults: dict[str, Any] = {
        "agent": "a",
        "current_agent": "a",
        "input": [],
        "config": {},
        "context": {},
        "run_metadata": {},
        "cancel_requested": False,
        "event_seq": 0,
        "lease_token": 0,
        "created_at": stamp,
        "updated_at": stamp,
    }
    return Run(id=run_id, status=status, **(defaults | values))


async def claim(db: Database, worker: str, limit: int = 10) -> list[Claim]:
    async with db.session_scope() as session:
        return await Leases(session).claim(
            worker, limit=limit, now=datetime.now(UTC), lease_seconds=20
        )


async def test_a_claim_tells_a_takeover_from_a_queued_run_and_carries_the_row(
    db_url: str,
) -> None:
    db = Database(db_url)
    expired = datetime.now(UTC) - timedelta(seconds=60)
    try:
        async with db.session_scope() as session:
            session.add_all(
                [
                    stored_run("lost", RunStatus.RUNNING, claimed_by="other",
                               lease_expires_at=expired, lease_token=3, takeovers=1),
                    stored_run("mine", RunStatus.RUNNING, claimed_by="me",
                               lease_expires_at=expired, lease_token=5, takeovers=0),
                    stored_run("queued", RunStatus.QUEUED, cancel_requested=True),
                ]
            )  # fmt: skip

        claims = {c.run_id: c for c in await claim(db, "me")}

        assert (claims["lost"].taken_over, claims["lost"].takeovers) == (True, 2)
        assert claims["lost"].lease_token == 4
        # Its own run after an outage longer than the lease: not a takeover.
        assert (claims["mine"].taken_over, claims["mine"].takeovers) == (False, 0)
        assert claims["queued"].taken_over is False
        run = claims["queued"].run
        assert run is not None
        assert (run.status, run.claimed_by, run.cancel_requested) == (RunStatus.RUNNING, "me", True)
        assert await claim(db, "me") == []
    finally:
        await db.dispose()


async def test_claimers_at_once_never_share_a_run(db_url: str) -> None:
    databases = [Database(db_url, pool_size=2) for _ in range(4)]
    taken: list[str] = []

    async def claim_until_empty(db: Database, worker: str) -> None:
        for _ in range(100):  # bounded: 200 runs at up to 7 a claim
            claims = await claim(db, worker, limit=7)
            if not claims:
                return
            taken.extend(c.run_id for c in claims)

    try:
        async with databases[0].session_scope() as session:
            session.add_all([stored_run(f"q{i:03}", RunStatus.QUEUED) for i in range(200)])
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for i, db in enumerate(databases):
                    group.start_soon(claim_until_empty, db, f"w{i}")
    finally:
        for db in databases:
            await db.dispose()

    assert len(taken) == len(set(taken)) == 200


async def test_a_renewal_extends_the_leases_still_held_and_tells_cancels_and_takeovers(
    db_url: str,
) -> None:
    db = Database(db_url)
    soon = datetime.now(UTC) + timedelta(seconds=5)
    later = soon + timedelta(seconds=60)
    try:
        async with db.session_scope() as session:
            session.add_all(
                [
                    stored_run("kept", RunStatus.RUNNING, lease_token=2, lease_expires_at=soon),
                    stored_run("to_stop", RunStatus.RUNNING, lease_token=1,
                               lease_expires_at=soon, cancel_requested=True),
                    stored_run("taken", RunStatus.RUNNING, lease_token=7, lease_expires_at=soon),
                    stored_run("rested", RunStatus.COMPLETED, lease_token=4),
                ]
            )  # fmt: skip
        held = [Claim("to_stop", 1), Claim("kept", 2), Claim("taken", 6), Claim("rested", 4)]

        async with db.session_scope() as session:
            renewal = await Leases(session).renew_leases(held, expires_at=later)

        assert renewal.cancel_requested == ["to_stop"]
        assert renewal.taken == {"taken"}
        async with db.read_scope() as session:
            runs = {run.id: run for run in (await session.scalars(select(Run))).all()}
        assert runs["kept"].lease_expires_at == later
        assert runs["to_stop"].lease_expires_at == later
        assert runs["taken"].lease_expires_at == soon
    finally:
        await db.dispose()
