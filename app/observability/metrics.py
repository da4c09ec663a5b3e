"""Prometheus metrics of this process (each process is scraped on its own; see the README).

Counters and histograms count what this process did and add up across processes. The store's
gauges (runs by status, the queue) describe the whole store, so every API process reports the
same values: aggregate them with `max`, not `sum`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram

from app.engine.instruments import Measure, measuring
from app.store.runs import Queue

# Model calls and turns take seconds to minutes; tools anything from microseconds up.
SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
FAST_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120)

TURNS = Histogram(
    "agent_runs_turn_duration_seconds",
    "One turn of a run: the model call and the tool calls it asked for.",
    ["outcome"],
    buckets=SLOW_BUCKETS,
)
MODEL_CALLS = Histogram(
    "agent_runs_model_call_duration_seconds",
    "One model call, streamed to its end, retries included.",
    ["model", "outcome"],
    buckets=SLOW_BUCKETS,
)
TOOL_CALLS = Histogram(
    "agent_runs_tool_call_duration_seconds",
    "One tool call.",
    ["tool", "outcome"],
    buckets=FAST_BUCKETS,
)
TAKEOVERS = Counter(
    "agent_runs_takeovers_total",
    "Runs this process took over from an executor whose lease expired.",
)
FENCED = Counter(
    "agent_runs_lease_fenced_total",
    "Writes of this process refused because another executor had taken the run over.",
)
WEBHOOK_DELIVERIES = Counter(
    "agent_runs_webhook_deliveries_total",
    "Webhook delivery attempts by outcome.",
    ["outcome"],
)
RETENTION_DELETED = Counter(
    "agent_runs_retention_deleted_total",
    "Rows this process deleted past their retention, by kind: runs (each with everything of "
    "it), sessions, idempotency_keys.",
    ["kind"],
)
RUNS = Gauge("agent_runs_runs", "Runs in the store by status.", ["status"])
QUEUE_DEPTH = Gauge("agent_runs_queue_depth", "Queued runs an executor may claim now.")
OLDEST_QUEUED = Gauge(
    "agent_runs_oldest_queued_age_seconds",
    "How long the oldest run an executor may claim has waited.",
)
SESSION_WAITING = Gauge(
    "agent_runs_queued_behind_session",
    "Queued runs that wait, as they should, for an earlier run of their session to rest (one "
    "parked for a person, say): not claimable, so not in agent_runs_queue_depth.",
)


_Record = Callable[[Measure, float], None]


class PrometheusInstruments:
    """Feeds the engine's turns, model calls and tool calls into the histograms."""

    def turn(self, run_id: str, turn: int, agent: str) -> AbstractContextManager[Measure]:
        return _timed(lambda measure, seconds: TURNS.labels(measure.outcome).observe(seconds))

    def model_call(self, run_id: str, model: str) -> AbstractContextManager[Measure]:
        return _timed(
            lambda measure, seconds: MODEL_CALLS.labels(model, measure.outcome).observe(seconds)
        )

    def tool_call(self, run_id: str, tool: str, call_id: str) -> AbstractContextManager[Measure]:
        return _timed(
            lambda measure, seconds: TOOL_CALLS.labels(tool, measure.outcome).observe(seconds)
        )


@contextmanager
def _timed(record: _Record) -> Iterator[Measure]:
    started = time.perf_counter()
    try:
        with measuring() as measure:
            yield measure
    finally:
        record(measure, time.perf_counter() - started)


def observe_store(counts: dict[str, int], queue: Queue, now: datetime) -> None:
    """Set the store's gauges from one look at it."""
    for status, count in counts.items():
        RUNS.labels(status).set(count)
    QUEUE_DEPTH.set(queue.claimable)
    oldest = queue.oldest_claimable_at
    OLDEST_QUEUED.set((now - oldest).total_seconds() if oldest else 0)
    SESSION_WAITING.set(queue.waiting_for_session)
