"""`agent-runs worker` as a real process on PostgreSQL, beside an API-only app."""

from __future__ import annotations

import signal

import pytest

from app.testing import FakeModel, call, text
from tests.api.conftest import ClientFactory, WorkerFactory

pytestmark = pytest.mark.anyio


async def test_a_worker_process_completes_runs_queued_before_it_started(
    make_client: ClientFactory, fake: FakeModel, start_worker: WorkerFactory
) -> None:
    fake.script("m", [call("add", {"a": 20, "b": 22}), text("42")])
    async with make_client(with_executor=False) as client:
        queued = (
            await client.post("/runs", json={"agent": "calc", "input": "first", "session_id": "s"})
        ).json()
        worker = start_worker()

        # A run behind it in the same session returns from `wait` only once both are done.
        waited = await client.post(
            "/runs",
            params={"wait": 30},
            json={"agent": "calc", "input": "second", "session_id": "s"},
        )
        first = (await client.get(f"/runs/{queued['id']}")).json()

    assert waited.json()["status"] == "completed"
    assert first["status"] == "completed"
    assert first["final_output"] == "42"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
