"""W3: sessions x runs submitted at once on PostgreSQL (1 API + 2 workers): runs of a session
must run one at a time in the order they were created; the rate is compared with W1's."""

from __future__ import annotations

import time
from typing import Any

import anyio
import asyncpg
import httpx

from bench import client
from bench.context import Context
from bench.cpu import service_ms
from bench.load import Failed
from bench.procs import Resources, Service
from bench.report import Figure, Outcome, at_least
from bench.workloads.common import ONE_TURN, log, meter, until

POSTERS = 64  # sessions being submitted at once
ATTEMPTS = 5
RESTING = ("completed", "failed", "cancelled", "pending_approval")


async def _post(http: httpx.AsyncClient, session: str, key: str, dropped: list[str]) -> None:
    """POST one run as a careful client does: with an Idempotency-Key, asked again when the
    connection drops before the answer (the contract answers a repeat with the same run, or 409
    while the first is still being stored)."""
    for _ in range(ATTEMPTS):
        try:
            response = await http.post(
                "/runs",
                json={"agent": client.AGENT, "input": ONE_TURN, "session_id": session},
                headers={"Idempotency-Key": key},
            )
        except httpx.TransportError as exc:
            dropped.append(f"{type(exc).__name__}: {exc}"[:200])
            continue
        if response.status_code in (200, 201):
            return
        if response.status_code != 409:
            raise Failed(f"POST /runs answered {response.status_code}: {response.text[:200]}")
        await anyio.sleep(0.1)
    raise Failed(f"POST /runs failed {ATTEMPTS} times")


async def _submit(service: Service, sessions: int, per_session: int) -> tuple[list[str], list[str]]:
    """Every session's runs, each POSTed after the previous one of its session was created;
    the POSTs that failed, and the connections that dropped (then retried)."""
    errors: list[str] = []
    dropped: list[str] = []
    numbers = iter(range(sessions))
    async with client.http(service.url, connections=POSTERS) as http:

        async def poster() -> None:
            for s in numbers:
                for r in range(per_session):
                    try:
                        await _post(http, f"w3-session-{s}", f"w3-{s}-{r}", dropped)
                    except Failed as exc:
                        errors.append(str(exc))

        async with anyio.create_task_group() as group:
            for _ in range(POSTERS):
                group.start_soon(poster)
    return errors, dropped


async def _violations(db: asyncpg.Connection) -> dict[str, int]:
    """Runs not completed; runs started before the previous run of their session finished;
    session messages stored out of the runs' creation order."""
    rows = await db.fetch(
        "SELECT session_id, id, status, started_at, finished_at FROM runs"
        " WHERE session_id LIKE 'w3-session-%' ORDER BY session_id, seq"
    )
    found = {"not_completed": 0, "overlapping": 0, "messages_out_of_order": 0}
    order: dict[str, list[str]] = {}
    previous: Any = None
    for row in rows:
        order.setdefault(row["session_id"], []).append(row["id"])
        found["not_completed"] += row["status"] != "completed"
        same = previous is not None and previous["session_id"] == row["session_id"]
        if same and previous["finished_at"] > row["started_at"]:
            found["overlapping"] += 1
        previous = row
    messages = await db.fetch(
        "SELECT session_id, run_id FROM session_messages"
        " WHERE session_id LIKE 'w3-session-%' ORDER BY session_id, position"
    )
    stored: dict[str, list[str]] = {}
    for row in messages:
        runs = stored.setdefault(row["session_id"], [])
        if not runs or runs[-1] != row["run_id"]:
            runs.append(row["run_id"])
    found["messages_out_of_order"] = sum(stored.get(s) != ids for s, ids in order.items())
    return found


async def _measure(
    ctx: Context, service: Service, sessions: int, per_session: int
) -> dict[str, Any]:
    total = sessions * per_session
    db = await asyncpg.connect(service.dsn)
    try:
        cpu = meter(service).start()
        began = time.perf_counter()
        errors, dropped = await _submit(service, sessions, per_session)
        submitted = time.perf_counter() - began

        async def all_rest() -> bool:
            unfinished: int = await db.fetchval(
                "SELECT count(*) FROM runs WHERE session_id LIKE 'w3-session-%'"
                " AND status <> ALL($1::text[])",
                list(RESTING),
            )
            return unfinished == 0

        await until(all_rest, ctx.pick(600, 300), interval=0.2)
        seconds = time.perf_counter() - began
        used = cpu.stop()
        violations = await _violations(db)
    finally:
        await db.close()
    return {
        "runs": total,
        "submitted_s": submitted,
        "seconds": seconds,
        "runs_per_s": total / seconds,
        "violations": violations,
        "post_errors": len(errors),
        "post_error_examples": errors[:5],
        "dropped_connections": len(dropped),
        "dropped_examples": dropped[:5],
        "cpu_ms_per_run": {k: v / total for k, v in used.items()},
    }


def run(ctx: Context) -> Outcome:
    sessions, per_session = ctx.count(1000, 100), ctx.count(10, 5)
    with Resources() as stack:
        service = ctx.service(stack, "w3")
        measured = anyio.run(_measure, ctx, service, sessions, per_session)
    rate, w1 = measured["runs_per_s"], ctx.shared.get("w1_saturation")
    violations = sum(measured["violations"].values()) + measured["post_errors"]
    log(f"w3: {rate:.1f} runs/s, violations {measured['violations']}")
    return Outcome(
        figures=[
            Figure(
                "W3",
                f"order violations and failed POSTs ({sessions} sessions x {per_session} runs)",
                violations,
                "",
                "0",
                violations == 0,
            ),
            Figure(
                "W3",
                "runs/s, all submitted at once",
                rate,
                "/s",
                f">= 85% of W1 ({w1:.0f}/s)" if w1 else ">= 85% of W1 (not run)",
                at_least(rate, 0.85 * w1) if w1 else None,
            ),
            Figure(
                "W3",
                "POSTs whose connection dropped (asked again)",
                measured["dropped_connections"],
                "",
            ),
            Figure("W3", "service CPU per run", service_ms(measured["cpu_ms_per_run"]), "ms"),
        ],
        details=measured,
    )
