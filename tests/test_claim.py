"""The claim: one statement that picks runs and takes them, telling takeovers apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

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
