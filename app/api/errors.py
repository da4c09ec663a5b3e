"""One problem+json shape (RFC 9457) for every 4xx and 5xx, mapped from domain errors here."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from app.api.auth import AuthenticationUnavailable, Forbidden, Unauthenticated
from app.api.schemas import Problem, ProblemError
from app.api.streams import TooManyStreams
from app.engine.errors import (
    CallAlreadyDecided,
    EngineError,
    InvalidDecision,
    RunEnded,
    RunNotPending,
    ToolClash,
    UnknownAgent,
    UnknownCall,
)
from app.services.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    NotAllowed,
    NotFound,
    RunNotEnded,
    SessionBusy,
    TooManyRuns,
)
from app.store.database import DATABASE_ERRORS, unavailable_cause

log = structlog.get_logger("app.api")

MEDIA_TYPE = "application/problem+json"

# Domain error -> (status, problem type, title), most specific first.
_DOMAIN: list[tuple[type[EngineError], int, str, str]] = [
    (NotFound, 404, "not-found", "Not found"),
    (NotAllowed, 403, "forbidden", "Forbidden"),
    (UnknownAgent, 422, "validation-error", "Unknown agent"),
    (ToolClash, 422, "validation-error", "Tool name taken"),
    (RunEnded, 409, "run-ended", "Run has ended"),
    (RunNotPending, 409, "run-not-pending", "Run is not pending approval"),
    (CallAlreadyDecided, 409, "call-already-decided", "Call already decided"),
    (UnknownCall, 422, "validation-error", "Unknown tool call"),
    (InvalidDecision, 422, "validation-error", "Invalid decision"),
    (RunNotEnded, 409, "run-not-ended", "Run has not ended"),
    (SessionBusy, 409, "session-busy", "Session is busy"),
    (TooManyRuns, 429, "too-many-runs", "Too many runs"),
    (IdempotencyKeyInUse, 409, "idempotency-key-in-use", "Idempotency key in use"),
    (IdempotencyKeyReused, 422, "idempotency-key-reused", "Idempotency key reused"),
]

# Sent with every 503: what made the service unavailable usually passes within seconds.
RETRY_SOON = {"Retry-After": "1"}

_BY_STATUS = {
    400: ("validation-error", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    408: ("request-timeout", "Request timeout"),
    413: ("payload-too-large", "Payload too large"),
    422: ("validation-error", "Validation error"),
    503: ("unavailable", "Service unavailable"),
}


class ApiError(Exception):
    """An HTTP-level refusal raised by the API layer itself (a bad cursor, say)."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: Sequence[ProblemError] = (),
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers


def problem(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    title: str | None = None,
    errors: Sequence[ProblemError] | None = None,
    error_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    default_kind, default_title = _BY_STATUS.get(status, ("internal-error", "Error"))
    body = Problem(
        type=f"/problems/{kind or default_kind}",
        title=title or default_title,
        status=status,
        detail=detail,
        errors=list(errors) if errors is not None else None,
        error_id=error_id,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(EngineError, _domain_error)  # type: ignore[arg-type]
    app.add_exception_handler(Unauthenticated, _unauthenticated)  # type: ignore[arg-type]
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(AuthenticationUnavailable, _authentication_unavailable)
    app.add_exception_handler(TooManyStreams, _too_many_streams)  # type: ignore[arg-type]
    for database_error in DATABASE_ERRORS:
        app.add_exception_handler(database_error, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [_problem_error(item) for item in exc.errors()]
    if any(item.get("type") == "json_invalid" for item in exc.errors()):
        return problem(400, "The request body is not valid JSON.", errors=errors)
    summary = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors)
    return problem(422, summary or "The request is not valid.", errors=errors)


def _problem_error(item: Any) -> ProblemError:
    loc = [part if isinstance(part, int) else str(part) for part in item.get("loc", ())]
    return ProblemError(loc=loc, msg=str(item.get("msg", "")))


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # The router names the methods of the first route that matched the path only; the
        # path may have others (GET and POST /runs are two routes).
        headers["Allow"] = ", ".join(allowed_methods(request))
        detail = f"{request.method} is not allowed here; allowed: {headers['Allow']}."
        return problem(405, detail, headers=headers)
    return problem(exc.status_code, str(exc.detail), headers=headers)


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """The methods some route takes at the request's path, asked of the routes themselves
    (included routers answer for the routes inside them)."""
    # A bare scope: the request's own carries the matched route, which would match only it.
    bare = {
        "type": "http",
        "path": request.scope["path"],
        "root_path": request.scope.get("root_path", ""),
    }
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(route.matches({**bare, "method": method})[0] is Match.FULL for route in routes)
    ]


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return problem(exc.status, exc.detail, errors=exc.errors or None, headers=exc.headers)


async def _unauthenticated(request: Request, exc: Unauthenticated) -> JSONResponse:
    return problem(401, exc.detail, headers={"WWW-Authenticate": exc.challenge})


async def _forbidden(request: Request, exc: Exception) -> JSONResponse:
    return problem(403, str(exc))


async def _authentication_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("auth.keys_unavailable", detail=str(exc))
    return problem(503, str(exc), headers=RETRY_SOON)


async def _too_many_streams(request: Request, exc: TooManyStreams) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)}
    return problem(
        429, str(exc), kind="too-many-streams", title="Too many streams", headers=headers
    )


async def _domain_error(request: Request, exc: EngineError) -> JSONResponse:
    for error_type, status, kind, title in _DOMAIN:
        if isinstance(exc, error_type):
            errors = None
            if isinstance(exc, UnknownAgent):
                errors = [ProblemError(loc=["body", "agent"], msg=str(exc))]
            elif isinstance(exc, InvalidDecision) and exc.errors:
                errors = [ProblemError(loc=[e["loc"]], msg=e["msg"]) for e in exc.errors]
            headers = None
            if isinstance(exc, TooManyRuns):
                headers = {"Retry-After": str(exc.retry_after)}
            return problem(status, str(exc), kind=kind, title=title, errors=errors, headers=headers)
    return await _unexpected_error(request, exc)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    cause = unavailable_cause(exc)
    if cause is None:
        return await _unexpected_error(request, exc)
    # A restart, a failover, a full disk: nothing was wrong with the request, try it again.
    log.warning(
        "request.database_unavailable", path=request.url.path, error=type(exc).__name__, cause=cause
    )
    return problem(503, f"{cause[0].upper()}{cause[1:]}; retry shortly.", headers=RETRY_SOON)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    error_id = uuid.uuid4().hex
    log.error(
        "request.failed",
        error_id=error_id,
        method=request.method,
        path=request.url.path,
        exc_info=exc,
    )
    detail = f"An unexpected error occurred; quote error id {error_id} to the operator."
    return problem(500, detail, kind="internal-error", title="Internal error", error_id=error_id)
