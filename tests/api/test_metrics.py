"""GET /metrics: values that move with real runs."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.testing import FakeModel, call, text
from tests.api.conftest import Client, ClientFactory

pytestmark = pytest.mark.anyio


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_runs(client: Client, fake: FakeModel) -> None:
    before = await scrape(client)
    fake.script("m", [call("add", {"a": 1, "b": 2}), text("3")])
    done = await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"})
    assert done.json()["status"] == "completed"
    fake.script("m", [call("delete_record", {"record_id": "r"}), text("gone")])
    parked = await client.post("/runs", params={"wait": 10}, json={"agent": "calc", "input": "y"})
    assert parked.json()["status"] == "pending_approval"

    after = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(after, "agent_runs_runs", status="completed") == 1
    assert value(after, "agent_runs_runs", status="pending_approval") == 1
    assert value(after, "agent_runs_runs", status="queued") == 0
    assert value(after, "agent_runs_queue_depth") == 0
    assert value(after, "agent_runs_oldest_queued_age_seconds") == 0
    assert grew("agent_runs_model_call_duration_seconds_count", model="m", outcome="ok") == 3
    assert grew("agent_runs_tool_call_duration_seconds_count", tool="add", outcome="completed") == 1
    assert grew("agent_runs_turn_duration_seconds_count", outcome="completed") == 1
    assert grew("agent_runs_turn_duration_seconds_count", outcome="paused") == 1


async def test_queued_runs_show_in_the_queue_gauges(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    async with make_client(with_executor=False) as client:
        await client.post("/runs", json={"agent": "calc", "input": "waits"})
        await client.post("/runs", json={"agent": "calc", "input": "waits too"})
        samples = await scrape(client)
    assert value(samples, "agent_runs_queue_depth") == 2
    assert value(samples, "agent_runs_runs", status="queued") == 2
    assert value(samples, "agent_runs_oldest_queued_age_seconds") >= 0


async def test_runs_waiting_behind_their_session_are_not_in_the_queue_depth(
    client: Client, fake: FakeModel
) -> None:
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("gone")])
    session = {"agent": "calc", "session_id": "s1"}
    parked = await client.post("/runs", params={"wait": 10}, json={**session, "input": "first"})
    assert parked.json()["status"] == "pending_approval"
    # Behind the parked run, as the contract says: not claimable until it is decided.
    await client.post("/runs", json={**session, "input": "second"})
    await client.post("/runs", json={**session, "input": "third"})

    samples = await scrape(client)

    assert value(samples, "agent_runs_runs", status="queued") == 2
    assert value(samples, "agent_runs_queue_depth") == 0
    assert value(samples, "agent_runs_oldest_queued_age_seconds") == 0
    assert value(samples, "agent_runs_queued_behind_session") == 2
