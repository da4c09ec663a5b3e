"""Human decisions on parked runs, and the list of approval requests across runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.engine import DecisionInput, Engine, RunState, RunStatus
from app.engine.errors import RunEnded, RunNotPending
from app.services.callers import Caller
from app.services.errors import NotAllowed, RunNotFound
from app.services.idempotency import Idempotency, once
from app.services.lifecycle import event_records, now
from app.store.approvals import ApprovalRepository
from app.store.database import Database
from app.store.lifecycle import RunLifecycle
from app.store.models import Approval, Run
from app.store.runs import RunRepository
from app.store.status import ENDED


class ApprovalService:
    def __init__(
        self, db: Database, engine: Engine, *, idempotency_key_ttl: timedelta | None = None
    ) -> None:
        self.db = db
        self.engine = engine
        self.idempotency_key_ttl = idempotency_key_ttl

    async def decide(
        self,
        run_id: str,
        decisions: Sequence[DecisionInput],
        caller: Caller,
        *,
        decided_by: str | None = None,
        idempotency: Idempotency | None = None,
        may_decide: Callable[[str], bool] | None = None,
    ) -> tuple[Run, bool]:
        """Apply decisions; once none is pending the run is queued for any executor.
        `may_decide` (given a call's tool) refuses the whole request with `NotAllowed` when one
        of its calls is not the caller's to decide.

        The run's row lock makes concurrent requests on one call take turns: the first decides
        it, the others find it decided (409).
        """

        async def apply(session: AsyncSession) -> Run:
            return await self._apply(session, run_id, decisions, caller, decided_by, may_decide)

        scope = f"runs.{run_id}.approvals"
        return await once(
            self.db, scope, idempotency, apply, caller.tenancy, ttl=self.idempotency_key_ttl
        )

    async def _apply(
        self,
        session: AsyncSession,
        run_id: str,
        decisions: Sequence[DecisionInput],
        caller: Caller,
        decided_by: str | None,
        may_decide: Callable[[str], bool] | None,
    ) -> Run:
        runs = RunRepository(session, caller.tenancy)
        run = await runs.get(run_id, for_update=True)
        if run is None:
            raise RunNotFound(f"no run has id {run_id!r}")
        if run.status in ENDED:
            raise RunEnded(f"run {run_id} has ended ({run.status}); there is nothing to decide")
        if run.status != RunStatus.PENDING_APPROVAL or run.state is None:
            raise RunNotPending(f"run {run_id} is {run.status}, not pending_approval")
        state = RunState.from_json(run.state)
        if may_decide is not None:
            _check_allowed(state, decisions, may_decide, decided_by)
        events = self.engine.decide(state, decisions, decided_by=decided_by)
        records = event_records(events)
        decided = [data for name, data in records if name == "approval.decided"]
        await ApprovalRepository(session, caller.tenancy).decide(run_id, decided)
        resumes = state.status is RunStatus.RUNNING
        await RunLifecycle(session).decide(run, state.to_json(), records, now(), resumes=resumes)
        return run

    async def page(
        self,
        caller: Caller,
        *,
        statuses: Sequence[str],
        agent: str | None,
        tool: str | None,
        run_id: str | None,
        before_seq: int | None,
        limit: int,
        kind: str | None = None,
    ) -> list[Approval]:
        async with self.db.read_scope() as session:
            return await ApprovalRepository(session, caller.tenancy).page(
                statuses=statuses,
                agent=agent,
                tool=tool,
                run_id=run_id,
                before_seq=before_seq,
                limit=limit,
                kind=kind,
            )


def _check_allowed(
    state: RunState,
    decisions: Sequence[DecisionInput],
    may_decide: Callable[[str], bool],
    decided_by: str | None,
) -> None:
    """Refuse decisions on calls of tools (or on guardrails' asks: `approver:<guardrail>`) the
    caller may not decide. A call id the run does not have pending is left to the engine's own
    answer (422 or 409)."""
    tools = {call.call_id: call.name for call in state.current_calls}
    tools |= {ask.item_id: ask.name for ask in state.guardrail_asks}
    refused = sorted(
        {
            tools[d.call_id]
            for d in decisions
            if d.call_id in tools and not may_decide(tools[d.call_id])
        }
    )
    if refused:
        raise NotAllowed(f"{decided_by!r} may not decide calls of {', '.join(refused)}")
