"""Approvals: decide a parked run's pending calls, and list requests across runs."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from app.api import pagination
from app.api.auth import Approver, decision_rule
from app.api.deps import ApprovalsDep, CallerDep, RunsDep, caller_name, problems
from app.api.routes.runs import IdempotencyKey, Wait, fingerprint
from app.api.schemas import ApprovalOut, ApprovalPage, Decide, RunOut
from app.engine import DecisionInput
from app.engine.state import PendingKind
from app.services.idempotency import Idempotency

router = APIRouter(tags=["approvals"])


@router.post(
    "/runs/{run_id}/approvals",
    responses=problems(400, 403, 404, 409, 422),
    dependencies=[Approver],
)
async def decide(
    run_id: str,
    body: Decide,
    request: Request,
    approvals: ApprovalsDep,
    runs: RunsDep,
    caller: CallerDep,
    wait: Wait = 0,
    idempotency_key: IdempotencyKey = None,
) -> RunOut:
    """Decide pending tool calls; the run resumes once every pending call has a decision.
    With `wait`, the answer is held until the run rests again (ended, or waiting for more
    decisions)."""
    decisions = [
        DecisionInput(d.call_id, d.approved, d.reason, d.arguments, d.remember, d.output)
        for d in body.decisions
    ]
    idempotency = (
        Idempotency(
            idempotency_key,
            fingerprint(body),
            caller_name(request) or "",
            caller.principal.tenant,
        )
        if idempotency_key
        else None
    )
    run, _ = await approvals.decide(
        run_id,
        decisions,
        caller,
        decided_by=caller_name(request),
        idempotency=idempotency,
        may_decide=decision_rule(request),
    )
    run = await runs.wait_until_resting(run, wait)
    return await runs.show(run)


@router.get("/approvals", responses=problems(422))
async def list_approvals(
    approvals: ApprovalsDep,
    caller: CallerDep,
    status: Literal["pending", "decided", "all"] = "pending",
    agent: str | None = None,
    tool: str | None = None,
    kind: Annotated[PendingKind | None, Query(description="One kind of request only.")] = None,
    run_id: Annotated[str | None, Query(description="One run's requests only.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> ApprovalPage:
    """Approval requests across runs, newest first, each with the run's last messages."""
    found = await approvals.page(
        caller,
        statuses=[] if status == "all" else [status],
        agent=agent,
        tool=tool,
        run_id=run_id,
        kind=kind,
        before_seq=pagination.decode(cursor, "seq", int),
        limit=limit + 1,
    )
    page, next_cursor = pagination.by_seq(found, limit)
    items = [ApprovalOut.model_validate(item, from_attributes=True) for item in page]
    return ApprovalPage(items=items, next_cursor=next_cursor)
