"""Listing runs by status on a store where the newest runs are of another status: the page must
come from the (status, seq) index, not a walk over every newer run; a tenant's list from the
(tenant, seq) index, not a sort of all its runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import event, text

from app.store.database import Database
from app.store.runs import RunRepository
from app.store.tenancy import EVERY_TENANT, Tenancy
from tests.conftest import is_postgres

pytestmark = pytest.mark.anyio

SEED = """
INSERT INTO runs (id, status, agent, current_agent, input, config, context, metadata,
                  cancel_requested, event_seq, lease_token, takeovers, created_at, updated_at)
SELECT :prefix || g, :status, 'a', 'a', '[]', '{}', '{}', '{}', false, 0, 0, 0, now(), now()
FROM generate_series(1, :count) AS g
"""


async def seeded_page(db_url: str, tenancy: Tenancy, statuses: list[str]) -> tuple[list[str], str]:
    """A page of 21 runs on a store of 20,000 parked runs under 200,000 completed ones (all of
    the default tenant), and the plan of its query."""
    if not is_postgres(db_url):
        pytest.skip("the query plan in question is PostgreSQL's")
    db = Database(db_url)
    statements: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        _connection, _cursor, statement, parameters, _context, _many = args
        statements.append((statement, parameters))

    try:
        async with db.session_scope() as session:
            for prefix, status, count in (
                ("p", "pending_approval", 20_000),
                ("c", "completed", 200_000),
            ):
                await session.execute(
                    text(SEED), {"prefix": prefix, "status": status, "count": count}
                )
            await session.execute(text("ANALYZE runs"))
        event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
        async with db.read_scope() as session:
            page = await RunRepository(session, tenancy).page(statuses=statuses, limit=21)
        event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
        statement, parameters = statements[0]
        async with db.engine.connect() as connection:
            explained = await connection.exec_driver_sql(
                f"EXPLAIN (FORMAT JSON) {statement}", parameters
            )
            plan = json.dumps(explained.scalar())
    finally:
        await db.dispose()
    return [run.id for run in page], plan


async def test_one_status_is_listed_from_its_index_under_newer_runs(db_url: str) -> None:
    page, plan = await seeded_page(db_url, EVERY_TENANT, ["pending_approval"])

    assert page == [f"p{i}" for i in range(20_000, 19_979, -1)]
    assert "ix_runs_status_seq" in plan, plan


async def test_a_tenant_s_runs_are_listed_from_its_index_not_sorted(db_url: str) -> None:
    page, plan = await seeded_page(db_url, Tenancy("default"), [])

    assert page == [f"c{i}" for i in range(200_000, 199_979, -1)]
    assert "ix_runs_tenant_seq" in plan, plan
    assert '"Sort"' not in plan, plan
