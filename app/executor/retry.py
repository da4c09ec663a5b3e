"""Riding out database faults: a restart or a dropped connection is retried with backoff.

Only transient faults are retried (`is_transient`); a wrong statement fails at once. Reads
retry freely; writes of a driver are safe to repeat because they are fenced and expect the
run's last event id (`RunRepository.save_fenced`), so an attempt whose commit was in doubt is
recognised, never applied twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from app.store.database import is_transient

T = TypeVar("T")

_log = structlog.get_logger("app.executor")

FIRST_WAIT_SECONDS = 0.05
MAX_WAIT_SECONDS = 2.0


async def retrying(operation: Callable[[], Awaitable[T]], log: Any = _log) -> T:
    """Run `operation` until it succeeds or fails for a reason other than the database being
    away; the caller bounds the wait (a driver's cancel scope, a stopping executor)."""

    def report(retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        log.warning(
            "database.retry", attempt=retry_state.attempt_number, error=type(error).__name__
        )

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(
            multiplier=FIRST_WAIT_SECONDS, jitter=FIRST_WAIT_SECONDS, max=MAX_WAIT_SECONDS
        ),
        before_sleep=report,
        reraise=True,
    ):
        with attempt:
            return await operation()
    raise AssertionError("unreachable: tenacity retries until a result or an exception")
