"""`/runs`: create, read, list and cancel runs."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, WithJsonSchema

from app.api import pagination
from app.api.deps import CallerDep, RunsDep, ServicesDep, caller_name, problems
from app.api.errors import ApiError
from app.api.schemas import CreateRun, ProblemError, RunOut, RunPage
from app.engine.state import RunStatus, RunTool
from app.resources import STATUSES
from app.services.idempotency import Idempotency
from app.services.runs import NewRun
from app.webhooks.policy import WebhookRefused

router = APIRouter(prefix="/runs", tags=["runs"])

StatusFilter = Annotated[
    list[Annotated[RunStatus, WithJsonSchema({"enum": STATUSES, "type": "string"})]] | None,
    Query(description="Repeat to allow several."),
]
Wait = Annotated[
    float,
    Query(ge=0, le=60, description="Hold the answer up to this many seconds until the run rests."),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",
        description="Makes retries of this request safe (printable ASCII).",
    ),
]


@router.post(
    "",
    status_code=201,
    responses={
        200: {"model": RunOut, "description": "A repeat of an earlier request with the same key"},
        **problems(400, 409, 422, 429),
    },
)
async def create_run(
    body: CreateRun,
    request: Request,
    response: Response,
    services: ServicesDep,
    runs: RunsDep,
    caller: CallerDep,
    wait: Wait = 0,
    idempotency_key: IdempotencyKey = None,
) -> RunOut:
    """Create a run, of the caller's tenant; it is queued for an executor at once."""
    if body.webhook is not None:
        try:
            services.webhook_policy.check_url(body.webhook)
        except WebhookRefused as exc:
            where = ProblemError(loc=["body", "webhook"], msg=str(exc))
            raise ApiError(422, f"body.webhook: {exc}", [where]) from exc
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
    new = NewRun(
        agent=body.agent,
        input=body.input_value(),
        tools=[RunTool(t.name, t.description, t.parameters) for t in body.tools],
        session_id=body.session_id,
        context=body.context,
        config=body.config,
        metadata=body.metadata,
        if_busy=body.if_busy,
        webhook=body.webhook,
        output_schema=body.output_schema,
    )
    run, created = await runs.create(new, caller, idempotency)
    run = await runs.wait_until_resting(run, wait)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/runs/{run.id}"
    return await runs.show(run)


@router.get("", responses=problems(422))
async def list_runs(
    runs: RunsDep,
    caller: CallerDep,
    status: StatusFilter = None,
    agent: Annotated[str | None, Query(description="The agent the run started with.")] = None,
    session_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> RunPage:
    """Runs, newest first."""
    found = await runs.page(
        caller,
        statuses=status or [],
        agent=agent,
        session_id=session_id,
        before_seq=pagination.decode(cursor, "seq", int),
        limit=limit + 1,
    )
    page, next_cursor = pagination.by_seq(found, limit)
    return RunPage(items=await runs.shown(page), next_cursor=next_cursor)


@router.get("/{run_id}", responses=problems(404, 422))
async def get_run(run_id: str, runs: RunsDep, caller: CallerDep) -> RunOut:
    """The run, whole."""
    return await runs.show(await runs.get(run_id, caller))


@router.post("/{run_id}/cancel", status_code=202, responses=problems(404, 409, 422))
async def cancel_run(run_id: str, runs: RunsDep, caller: CallerDep) -> RunOut:
    """Cancel a run that has not ended: queued and parked runs at once, running ones at their
    next await."""
    return await runs.show(await runs.cancel(run_id, caller))


@router.delete("/{run_id}", status_code=204, responses=problems(404, 409, 422))
async def delete_run(run_id: str, runs: RunsDep, caller: CallerDep) -> Response:
    """Forget an ended run and everything of it: its events, approval requests, webhook
    deliveries and the idempotency keys bound to it. A run that has not ended is 409 (cancel
    it first). A session keeps the messages the run added to it."""
    await runs.delete(run_id, caller)
    return Response(status_code=204)


def fingerprint(body: BaseModel) -> str:
    """Equal for bodies that mean the same, whatever their key order or spacing."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
