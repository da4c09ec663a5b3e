"""OpenTelemetry spans: a run, its turns, model calls and tool calls, each with the run id."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.testing import FakeModel, call, text
from tests.api.conftest import ClientFactory

pytestmark = pytest.mark.anyio

_exporter = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # A process has one tracer provider: set it the first time, as an application would.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    _exporter.clear()
    yield _exporter
    _exporter.clear()


def attribute(span: ReadableSpan, name: str) -> object:
    assert span.attributes is not None, span.name
    return span.attributes[name]


async def test_a_run_is_traced_with_its_turns_model_and_tool_calls(
    make_client: ClientFactory, fake: FakeModel, spans: InMemorySpanExporter
) -> None:
    fake.script("m", [call("add", {"a": 1, "b": 2}), text("3")])
    async with make_client(tracing=True) as client:
        run = (
            await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"})
        ).json()
    assert run["status"] == "completed"

    finished = [s for s in spans.get_finished_spans() if s.name.startswith("agent_runs.")]
    names = sorted(s.name for s in finished)
    assert names == [
        "agent_runs.model_call",
        "agent_runs.model_call",
        "agent_runs.run",
        "agent_runs.tool_call",
        "agent_runs.turn",
        "agent_runs.turn",
    ]
    assert {attribute(s, "agent_runs.run_id") for s in finished} == {run["id"]}
    by_id = {s.context.span_id: s for s in finished}
    [run_span] = [s for s in finished if s.name == "agent_runs.run"]
    [tool_span] = [s for s in finished if s.name == "agent_runs.tool_call"]
    assert attribute(tool_span, "agent_runs.tool") == "add"
    assert attribute(tool_span, "agent_runs.outcome") == "completed"
    for span in finished:
        if span.name in ("agent_runs.model_call", "agent_runs.tool_call"):
            assert span.parent is not None
            assert by_id[span.parent.span_id].name == "agent_runs.turn"
        elif span.name == "agent_runs.turn":
            assert span.parent is not None
            assert span.parent.span_id == run_span.context.span_id


async def test_without_tracing_no_turn_is_traced(
    make_client: ClientFactory, fake: FakeModel, spans: InMemorySpanExporter
) -> None:
    fake.script("m", [text("hi")])
    async with make_client() as client:
        await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"})
    assert [s.name for s in spans.get_finished_spans() if s.name == "agent_runs.turn"] == []
