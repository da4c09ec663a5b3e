"""Open-loop load: requests sent at a constant arrival rate whatever the answers do, each
latency measured from the time it was scheduled (not sent), so a slow service cannot hide its
slowness by slowing the sender; then a sweep of rates up to saturation."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import httpx

Send = Callable[[int], Awaitable[None]]
"""Sends request number i and returns when its answer is complete; raises when it failed."""


class Failed(Exception):
    """One request's answer was not the expected one."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Step:
    """One constant-rate stretch of load."""

    rate: float  # offered, per second
    seconds: float  # from the first scheduled send to the last answer
    sent: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, of the completed ones
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    def ms(self, q: float) -> float | None:
        value = percentile(self.latencies, q)
        return None if value is None else value * 1000

    async def timed(self, send: Send, i: int, since: float) -> None:
        """Send request `i`; its latency counts from `since`, its failure as an error."""
        try:
            await send(i)
        except (Failed, httpx.HTTPError, TimeoutError) as exc:
            self.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
        else:
            self.latencies.append(time.perf_counter() - since)

    def summary(self) -> dict[str, object]:
        return {
            "offered_per_s": round(self.rate, 1),
            "completed_per_s": round(self.throughput, 1),
            "sent": self.sent,
            "completed": self.completed,
            "p50_ms": self.ms(50),
            "p99_ms": self.ms(99),
            "errors": dict(self.errors),
        }


async def open_loop(send: Send, rate: float, seconds: float, *, max_in_flight: int) -> Step:
    """Send `rate` x `seconds` requests on schedule. A request due while `max_in_flight` are
    outstanding is not sent and counts as an error ("backlog"): the service is saturated."""
    count = max(1, round(rate * seconds))
    step = Step(rate, 0.0)
    in_flight = 0
    start = time.perf_counter() + 0.01

    async def one(i: int, due: float) -> None:
        nonlocal in_flight
        try:
            await step.timed(send, i, due)
        finally:
            in_flight -= 1

    async with anyio.create_task_group() as group:
        for i in range(count):
            due = start + i / rate
            await anyio.sleep(max(0.0, due - time.perf_counter()))
            if in_flight >= max_in_flight:
                step.errors["backlog: too many requests outstanding"] += 1
                continue
            in_flight += 1
            step.sent += 1
            group.start_soon(one, i, due)
    step.seconds = time.perf_counter() - start
    return step


async def closed_loop(send: Send, count: int, concurrency: int) -> Step:
    """`count` requests, `concurrency` at a time (for peers compared at the same concurrency)."""
    step = Step(0.0, 0.0)
    numbers = iter(range(count))
    start = time.perf_counter()

    async def lane() -> None:
        for i in numbers:
            step.sent += 1
            await step.timed(send, i, time.perf_counter())

    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(lane)
    step.seconds = time.perf_counter() - start
    step.rate = step.sent / step.seconds if step.seconds > 0 else 0.0
    return step


def saturated(step: Step, latency_limit: float) -> bool:
    """The service no longer keeps up: answers fall behind the arrivals, or pile up."""
    p99 = percentile(step.latencies, 99)
    lost = sum(step.errors.values()) > 0.01 * max(1, step.sent)
    return step.throughput < 0.9 * step.rate or lost or (p99 is not None and p99 > latency_limit)


async def sweep(
    send: Send,
    *,
    start_rate: float,
    seconds: float,
    factor: float = 1.5,
    max_steps: int = 8,
    latency_limit: float = 2.0,
    max_in_flight: int = 1000,
    on_step: Callable[[Step], None] | None = None,
) -> list[Step]:
    """Constant-rate steps, each `factor` faster, until one saturates the service. Its
    saturation throughput is the best completed rate of any step (`best`)."""
    steps: list[Step] = []
    rate = start_rate
    for _ in range(max_steps):
        step = await open_loop(send, rate, seconds, max_in_flight=max_in_flight)
        steps.append(step)
        if on_step is not None:
            on_step(step)
        if saturated(step, latency_limit):
            break
        rate *= factor
    return steps


def best(steps: Sequence[Step]) -> Step:
    return max(steps, key=lambda step: step.throughput)
