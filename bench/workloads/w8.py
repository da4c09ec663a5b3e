"""W8 (growth): does a turn cost the same at turn 100 as at turn 2, and a run in a long session
what it costs in a fresh one? With the bench's own agents (`blob` returns K KiB of text), on
SQLite (one `serve`) and on PostgreSQL (1 API + 1 worker), one run at a time. Counts are full /
`--quick`.

- **long runs**: 3 / 1 runs of 100 turns, each tool output 10 KiB. The fake times every request
  of a run (`trace=`, see `bench.fake`): a turn's service time is from the fake's answer to the
  run's next request arriving whole, less a floor under building that request (this process
  decoding and encoding its body again, which grows with the conversation whatever is stored).
  Reported: the median over turns 2-11 and over the last ten, and their ratio; bytes written per
  turn (SQLite: the process's `write_bytes`; PostgreSQL: WAL); bytes stored per run (the SQLite
  file after a WAL checkpoint; `pg_database_size`) beside the conversation's JSON size.
- **long session**: a session is given 5,000 messages of history (5 runs whose input is 1,000
  messages each, ~1.2 MB in all), then a 10-turn run in it (1 KiB outputs) against the same run
  in a fresh session: bytes written per turn and wall time of each, and their ratios.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx

from bench.context import Context
from bench.fake import prompt
from bench.load import Failed
from bench.procs import ROOT, Resources, Service
from bench.report import Figure, Outcome, at_most
from bench.workloads.common import log

BLOBS = {"AGENTS_MODULE": "bench.agents", "PYTHONPATH": str(ROOT)}
AGENT = "blobs"
LONG_TURNS, LONG_KIB = 100, 10
EDGE = 10  # turns at each end of a long run that are compared
SESSION_MESSAGES, SEED_RUNS = 5_000, 5
SESSION_TURNS, SESSION_KIB = 10, 1
RUN_SECONDS = 600.0
VOCABULARY = (
    "the",
    "order",
    "account",
    "refund",
    "invoice",
    "customer",
    "shipped",
    "delayed",
    "please",
    "check",
    "status",
    "record",
    "delete",
    "approve",
    "reject",
    "reason",
    "tool",
    "call",
    "agent",
    "model",
    "answer",
    "question",
    "thanks",
    "number",
    "total",
    "amount",
    "date",
    "address",
    "email",
    "phone",
    "ticket",
    "priority",
    "support",
    "billing",
)


def _history(count: int, offset: int) -> list[dict[str, str]]:
    """Past turns of a conversation, ~240 bytes of JSON each, alternating user and assistant,
    of words drawn at random: a repeated sentence would compress to nothing in PostgreSQL's
    TOAST and hide what a real history costs."""
    roles = ("user", "assistant")
    messages = []
    for i in range(count):
        words = random.Random(offset + i).choices(VOCABULARY, k=30)
        messages.append({"role": roles[i % 2], "content": " ".join(words)})
    return messages


def _write_bytes(pid: int) -> int:
    lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    return int(dict(line.split(": ") for line in lines if line)["write_bytes"])


def _checkpointed_size(path: Path) -> int:
    with sqlite3.connect(path, timeout=30) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


class Written:
    """Bytes the database has written: the SQLite process's `write_bytes`, or PostgreSQL's WAL."""

    def __init__(self, service: Service, database: str) -> None:
        self.service, self.database = service, database

    async def now(self) -> int:
        if self.database == "sqlite":
            return await anyio.to_thread.run_sync(_write_bytes, self.service.api.pid)
        connection = await asyncpg.connect(self.service.dsn)
        try:
            lsn = await connection.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        finally:
            await connection.close()
        return int(lsn)

    async def stored(self) -> int:
        """The database's size on disk, as a new copy of it would start."""
        if self.database == "sqlite":
            path = Path(self.service.database_url.removeprefix("sqlite+aiosqlite:///"))
            return await anyio.to_thread.run_sync(_checkpointed_size, path)
        connection = await asyncpg.connect(self.service.dsn)
        try:
            await connection.execute("CHECKPOINT")
            size = await connection.fetchval("SELECT pg_database_size(current_database())")
        finally:
            await connection.close()
        return int(size)


async def _finished(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """POST /runs, then the run once it has ended; it must have completed."""
    response = await http.post("/runs", params={"wait": 60}, json={"agent": AGENT, **body})
    if response.status_code != 201:
        raise Failed(f"POST /runs answered {response.status_code}: {response.text[:200]}")
    run: dict[str, Any] = response.json()
    with anyio.fail_after(RUN_SECONDS):
        while run["status"] in ("queued", "running"):
            got = await http.get(f"/runs/{run['id']}")
            run = got.json()
            if run["status"] in ("queued", "running"):
                await anyio.sleep(0.2)
    if run["status"] != "completed":
        raise Failed(f"run {run['id']} {run['status']}: {run.get('error')}")
    return run


async def _trace(http: httpx.AsyncClient, fake_url: str, token: str) -> list[dict[str, float]]:
    root = fake_url.removesuffix("/v1")
    response = await http.get(f"{root}/trace/{token}")
    traced: list[dict[str, float]] = response.json()
    return traced


def _turn_ms(traced: list[dict[str, float]]) -> list[float]:
    """Per turn after the first: the service's time between two model calls, less the floor
    of building the second's request."""
    return [
        (after["arrived"] - before["answered"] - after["encode_s"]) * 1000
        for before, after in itertools.pairwise(traced)
    ]


async def _long_runs(ctx: Context, service: Service, database: str) -> dict[str, Any]:
    written = Written(service, database)
    first: list[float] = []
    last: list[float] = []
    per_turn_bytes: list[float] = []
    stored_per_run: list[float] = []
    conversation: list[int] = []
    async with httpx.AsyncClient(base_url=service.url, timeout=120) as http:
        for _ in range(ctx.count(3, 1)):
            token = uuid.uuid4().hex
            text = prompt(turns=LONG_TURNS, tool="blob", kilobytes=LONG_KIB, trace=token)
            size_before, bytes_before = await written.stored(), await written.now()
            run = await _finished(http, {"input": text, "config": {"max_turns": LONG_TURNS}})
            bytes_after, size_after = await written.now(), await written.stored()
            turns = _turn_ms(await _trace(http, ctx.fake.base_url, token))
            if len(turns) != LONG_TURNS - 1:
                raise Failed(f"the fake traced {len(turns) + 1} calls, not {LONG_TURNS}")
            first += turns[:EDGE]
            last += turns[-EDGE:]
            per_turn_bytes.append((bytes_after - bytes_before) / LONG_TURNS)
            stored_per_run.append(size_after - size_before)
            conversation.append(len(json.dumps(run["messages"]).encode()))
    first_ms, last_ms = statistics.median(first), statistics.median(last)
    log(f"w8 {database}: turn {first_ms:.1f} ms first ten, {last_ms:.1f} ms last ten")
    return {
        "first_ten_ms": first_ms,
        "last_ten_ms": last_ms,
        "ratio": last_ms / first_ms if first_ms > 0 else None,
        "bytes_written_per_turn": statistics.median(per_turn_bytes),
        "stored_bytes_per_run": statistics.median(stored_per_run),
        "conversation_bytes": statistics.median(conversation),
    }


async def _session_run(
    http: httpx.AsyncClient, written: Written, session_id: str
) -> tuple[float, float]:
    """A 10-turn run in `session_id`: bytes written per turn, and its wall seconds."""
    text = prompt(turns=SESSION_TURNS, tool="blob", kilobytes=SESSION_KIB)
    before, began = await written.now(), time.perf_counter()
    await _finished(http, {"input": text, "session_id": session_id})
    seconds = time.perf_counter() - began
    return (await written.now() - before) / SESSION_TURNS, seconds


async def _long_session(service: Service, database: str) -> dict[str, Any]:
    written = Written(service, database)
    long_session = f"w8-long-{uuid.uuid4().hex[:8]}"
    per_seed = SESSION_MESSAGES // SEED_RUNS
    async with httpx.AsyncClient(base_url=service.url, timeout=120) as http:
        for seed in range(SEED_RUNS):
            history = _history(per_seed - 1, seed * per_seed)
            ask = {"role": "user", "content": prompt(turns=1)}
            await _finished(http, {"input": [*history, ask], "session_id": long_session})
        fresh_bytes, fresh_s = await _session_run(http, written, f"w8-fresh-{uuid.uuid4().hex}")
        long_bytes, long_s = await _session_run(http, written, long_session)
        stored = await http.get(f"/sessions/{long_session}")
        history_bytes = len(stored.content)
    log(
        f"w8 {database}: per turn {fresh_bytes / 1024:.0f} KiB written in a fresh session, "
        f"{long_bytes / 1024:.0f} KiB at {SESSION_MESSAGES:,} messages"
    )
    return {
        "fresh_bytes_per_turn": fresh_bytes,
        "long_bytes_per_turn": long_bytes,
        "bytes_ratio": long_bytes / fresh_bytes if fresh_bytes > 0 else None,
        "fresh_seconds": fresh_s,
        "long_seconds": long_s,
        "seconds_ratio": long_s / fresh_s if fresh_s > 0 else None,
        "session_json_bytes": history_bytes,
    }


def _figures(database: str, runs: dict[str, Any], session: dict[str, Any]) -> list[Figure]:
    name = "PostgreSQL" if database == "postgres" else "SQLite"
    ratio, bytes_ratio = runs["ratio"], session["bytes_ratio"]
    stored = runs["stored_bytes_per_run"] / runs["conversation_bytes"]
    written = "WAL" if database == "postgres" else "bytes written"
    return [
        Figure("W8", f"{name}: turn cost, turns 2-11 (100-turn run)", runs["first_ten_ms"], "ms"),
        Figure("W8", f"{name}: turn cost, last ten turns", runs["last_ten_ms"], "ms"),
        Figure("W8", f"{name}: last ten / first ten", ratio, "x", "<= 1.3x", at_most(ratio, 1.3)),
        Figure(
            "W8",
            f"{name}: {written} per turn (100-turn run)",
            runs["bytes_written_per_turn"] / 1024,
            "KiB",
        ),
        Figure(
            "W8",
            f"{name}: stored bytes per run / conversation",
            stored,
            "x",
            "<= 1.5x",
            at_most(stored, 1.5),
        ),
        Figure(
            "W8",
            f"{name}: {written} per turn, 5,000-message session / fresh",
            bytes_ratio,
            "x",
            "<= 2x" if database == "postgres" else "",
            at_most(bytes_ratio, 2) if database == "postgres" else None,
        ),
    ]


def run(ctx: Context) -> Outcome:
    figures: list[Figure] = []
    details: dict[str, Any] = {}
    for database in ("sqlite", "postgres"):
        with Resources() as stack:
            service = ctx.service(
                stack, f"w8-{database}", database=database, workers=1, settings=BLOBS
            )
            runs = anyio.run(_long_runs, ctx, service, database)
            session = anyio.run(_long_session, service, database)
        figures += _figures(database, runs, session)
        details[database] = {"long_runs": runs, "long_session": session}
    return Outcome(figures=figures, details=details)
