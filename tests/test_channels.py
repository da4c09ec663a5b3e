"""The LISTEN/NOTIFY channel: payloads within PostgreSQL's limits, connection options, work
hints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from app.store.channels import PAYLOAD_LIMIT, DeltaChannel, _payloads
from app.store.database import Database
from app.store.wakeups import Wakeups
from tests.conftest import is_postgres

pytestmark = pytest.mark.anyio


def test_payloads_stay_under_the_limit_and_keep_every_character() -> None:
    text = "é😀x" * 3000  # escaped JSON makes astral characters 12 bytes each
    batch = [("run_1", {"turn": 1, "attempt": 1, "text": text})]
    batch += [("run_1", {"turn": 1, "attempt": 1, "text": "tail"})]
    batch += [("run_2", {"turn": 2, "attempt": 1, "text": "other"})]

    payloads = _payloads("me", batch)

    assert all(len(payload.encode()) < PAYLOAD_LIMIT for payload in payloads)
    deltas = [item for payload in payloads for item in json.loads(payload)["deltas"]]
    assert "".join(d["text"] for run, d in deltas if run == "run_1") == text + "tail"
    assert [d["text"] for run, d in deltas if run == "run_2"] == ["other"]
    assert all(json.loads(payload)["origin"] == "me" for payload in payloads)


def test_consecutive_deltas_of_a_turn_are_merged() -> None:
    batch = [("r", {"turn": 1, "attempt": 1, "text": t}) for t in ("a", "b", "c")]

    [payload] = _payloads("me", batch)

    assert json.loads(payload)["deltas"] == [["r", {"turn": 1, "attempt": 1, "text": "abc"}]]


def test_connection_options_only_sqlalchemy_knows_are_left_out() -> None:
    db = Database("postgresql://u:p@127.0.0.1:5/db?ssl=disable&prepared_statement_cache_size=0")

    channel = DeltaChannel(db, "me", None)

    assert channel._connect_arguments == {
        "host": "127.0.0.1",
        "port": 5,
        "user": "u",
        "password": "p",
        "database": "db",
        "ssl": "disable",
    }


@asynccontextmanager
async def listening(*channels: DeltaChannel) -> AsyncIterator[None]:
    """The channels connected and listening for the block (at most 10 s), then stopped."""
    async with anyio.create_task_group() as group:
        for channel in channels:
            group.start_soon(channel.run)
        with anyio.fail_after(10):
            for channel in channels:
                await channel.connected.wait()
            yield
        group.cancel_scope.cancel()


async def test_work_hints_reach_other_processes_only_and_a_burst_folds(migrated_url: str) -> None:
    if not is_postgres(migrated_url):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    db = Database(migrated_url)
    heard_by_sender: list[None] = []
    hints_in, hints = anyio.create_memory_object_stream[str](1000)
    sender = DeltaChannel(db, "sender", None, on_work=lambda: heard_by_sender.append(None))
    listener = DeltaChannel(
        db,
        "listener",
        None,
        on_cancel=hints_in.send_nowait,
        on_work=lambda: hints_in.send_nowait("work"),
    )
    try:
        async with listening(sender, listener):
            for _ in range(100):  # a burst of queued runs
                sender.work_queued()
            assert await hints.receive() == "work"
            # Notifications of one connection arrive in order: once this one is heard, any
            # other hint of the burst would have been too.
            await sender.cancel("marker")
            assert await hints.receive() == "marker"
    finally:
        await db.dispose()

    assert heard_by_sender == []  # its own executor was woken in-process


async def test_an_executor_woken_only_by_other_processes_hints_is_told_so() -> None:
    wakeups = Wakeups()

    wakeups.work_hinted()
    assert await wakeups.wait_for_work() is True

    wakeups.work_hinted()
    wakeups.work_available()
    assert await wakeups.wait_for_work() is False


async def test_the_first_delta_after_a_quiet_spell_of_the_process_or_the_run_goes_out_at_once(
    migrated_url: str,
) -> None:
    if not is_postgres(migrated_url):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    db = Database(migrated_url)
    deltas_in, deltas = anyio.create_memory_object_stream[tuple[str, str]](100)

    def deliver(run_id: str, data: dict[str, Any]) -> None:
        deltas_in.send_nowait((run_id, data["text"]))

    # A tick far longer than the test: only the leading edge can send the first delta.
    sender = DeltaChannel(db, "sender", None, flush_seconds=300)
    watcher = DeltaChannel(db, "watcher", deliver)
    try:
        async with listening(sender, watcher):
            sender.publish("run_1", {"turn": 1, "attempt": 1, "text": "Hel"})
            assert await deltas.receive() == ("run_1", "Hel")
            # The next ones wait for the tick or the checkpoint's flush, as one batch.
            sender.publish("run_1", {"turn": 1, "attempt": 1, "text": "lo"})
            sender.publish("run_1", {"turn": 1, "attempt": 1, "text": "!"})
            await anyio.wait_all_tasks_blocked()
            assert deltas.statistics().current_buffer_used == 0
            await sender.flush()
            assert await deltas.receive() == ("run_1", "lo!")
            # The process has just sent: only another run's text starting goes out at once.
            sender.publish("run_2", {"turn": 1, "attempt": 1, "text": "Hi"})
            with anyio.fail_after(10):
                assert await deltas.receive() == ("run_2", "Hi")
    finally:
        await db.dispose()
