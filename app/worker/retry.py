"""Riding out database faults: a restart or a dropped connection is retried with backoff.

Only transient faults are retried (`is_transient`); a wrong statement fails at once. Reads
retry freely; writes of a driver are safe to repeat because they are fenced and expect the
run's last event id (`RunRepository.save_fenced`), so an attempt whose commit was in doubt is
recognised, never applied twice.

Retries are bounded: past a lease's length another executor may own the run anyway, so the
driver gives up and leaves the run to its lease (and a stopping driver gives up at once).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    stop_any,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from app.store.database import is_transient

T = TypeVar("T")

FIRST_WAIT_SECONDS = 0.05
MAX_WAIT_SECONDS = 2.0


def _never() -> bool:
    return False


class _StopWhen(stop_base):
    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.predicate()


@dataclass(frozen=True)
class Retrier:
    """Retries an operation through transient faults for `within_seconds` at most, and no
    more once `stopping()` says so."""

    log: Any
    within_seconds: float
    stopping: Callable[[], bool] = field(default=_never)

    async def __call__(self, operation: Callable[[], Awaitable[T]]) -> T:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential_jitter(
                multiplier=FIRST_WAIT_SECONDS, jitter=FIRST_WAIT_SECONDS, max=MAX_WAIT_SECONDS
            ),
            stop=stop_any(stop_after_delay(self.within_seconds), _StopWhen(self.stopping)),
            before_sleep=self._report,
            reraise=True,
        ):
            with attempt:
                return await operation()
        raise AssertionError("unreachable: tenacity returns a result or raises")

    def _report(self, retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        self.log.warning(
            "database.retry", attempt=retry_state.attempt_number, error=type(error).__name__
        )
