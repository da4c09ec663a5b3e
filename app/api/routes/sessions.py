"""`/sessions`: a session's stored conversation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.deps import CallerDep, RunsDep, problems
from app.api.schemas import SessionOut

router = APIRouter(prefix="/sessions", tags=["sessions"])


@router.get("/{session_id}", responses=problems(404, 422))
async def get_session(session_id: str, runs: RunsDep, caller: CallerDep) -> SessionOut:
    """The session's conversation: every stored message of its runs, in order."""
    view = await runs.get_session(session_id, caller)
    return SessionOut(
        id=view.session.id,
        messages=view.messages,
        created_at=view.session.created_at,
        updated_at=view.session.updated_at,
    )


@router.delete("/{session_id}", status_code=204, responses=problems(404, 409, 422))
async def delete_session(
    session_id: str,
    runs: RunsDep,
    caller: CallerDep,
    forget_runs: Annotated[
        bool,
        Query(
            description="Forget the session's runs too, each with everything of it, as "
            "`DELETE /runs/{id}` would."
        ),
    ] = False,
) -> Response:
    """Forget the session's conversation (and with `forget_runs` its runs), in one
    transaction; refused while a run of it has not ended."""
    await runs.delete_session(session_id, caller, forget_runs=forget_runs)
    return Response(status_code=204)
