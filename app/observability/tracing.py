"""OpenTelemetry spans for runs, turns, model calls and tool calls: off unless configured.

With `TRACING=true` the process exports spans over OTLP/HTTP (the exporter reads the usual
`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, ...; install `agent-runs[tracing]`). Each
span carries the run id as `agent_runs.run_id`; turns, model calls and tool calls nest under the
run's span of the process that drives it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from app.engine.instruments import Instruments, Measure, measuring

TRACER_NAME = "agent-runs"
RUN_ID = "agent_runs.run_id"


class TracingUnavailable(RuntimeError):
    """TRACING is on but the OpenTelemetry SDK is not installed."""


def configure_tracing() -> None:
    """Export spans over OTLP, unless the process already has an SDK tracer provider (a test,
    or an application that set up OpenTelemetry itself)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(
            "TRACING=true needs the OpenTelemetry SDK: install agent-runs[tracing]"
        ) from exc
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    service = os.environ.get("OTEL_SERVICE_NAME") or TRACER_NAME
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def run_span(run_id: str) -> AbstractContextManager[Span]:
    """The span of one process driving one run (a takeover starts another); a no-op unless
    tracing is configured."""
    tracer = trace.get_tracer(TRACER_NAME)
    return tracer.start_as_current_span("agent_runs.run", attributes={RUN_ID: run_id})


class TracingInstruments:
    """The engine's turns, model calls and tool calls as spans."""

    def turn(self, run_id: str, turn: int, agent: str) -> AbstractContextManager[Measure]:
        return _span(
            "agent_runs.turn", {RUN_ID: run_id, "agent_runs.turn": turn, "agent_runs.agent": agent}
        )

    def model_call(self, run_id: str, model: str) -> AbstractContextManager[Measure]:
        return _span("agent_runs.model_call", {RUN_ID: run_id, "agent_runs.model": model})

    def tool_call(self, run_id: str, tool: str, call_id: str) -> AbstractContextManager[Measure]:
        return _span(
            "agent_runs.tool_call",
            {RUN_ID: run_id, "agent_runs.tool": tool, "agent_runs.call_id": call_id},
        )


@contextmanager
def _span(name: str, attributes: dict[str, Any]) -> Iterator[Measure]:
    with trace.get_tracer(TRACER_NAME).start_as_current_span(name, attributes=attributes) as span:
        try:
            with measuring() as measure:
                yield measure
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.set_attribute("agent_runs.outcome", measure.outcome)


class CombinedInstruments:
    """Several instruments measuring the same work."""

    def __init__(self, *parts: Instruments) -> None:
        self.parts = parts

    def turn(self, run_id: str, turn: int, agent: str) -> AbstractContextManager[Measure]:
        return _all(part.turn(run_id, turn, agent) for part in self.parts)

    def model_call(self, run_id: str, model: str) -> AbstractContextManager[Measure]:
        return _all(part.model_call(run_id, model) for part in self.parts)

    def tool_call(self, run_id: str, tool: str, call_id: str) -> AbstractContextManager[Measure]:
        return _all(part.tool_call(run_id, tool, call_id) for part in self.parts)


@contextmanager
def _all(parts: Iterator[AbstractContextManager[Measure]]) -> Iterator[Measure]:
    with ExitStack() as stack:
        measures = [stack.enter_context(part) for part in parts]
        shared = Measure()
        try:
            yield shared
        finally:
            # Before the parts exit: each records the outcome the engine gave.
            for measure in measures:
                measure.outcome = shared.outcome
