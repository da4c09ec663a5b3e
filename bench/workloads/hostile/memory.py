"""The memory part: a 50 MiB tool output read and listed, and event streams nobody reads."""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import asyncpg

from bench import client
from bench.cpu import rss_mib
from bench.fake import prompt
from bench.procs import ROOT, BenchError, Service
from bench.workloads.common import log, meter, until
from bench.workloads.hostile.common import events_request, mib, port

BLOBS = {"AGENTS_MODULE": "bench.agents", "PYTHONPATH": str(ROOT)}
LARGE_KIB = 50 * 1024
STREAMED_KIB = 4 * 1024
UNCUT = str(8 * 1024**2)  # MAX_TOOL_OUTPUT_BYTES above every streamed output
# Bytes: the server's writes stall once about this much is unread; a reader holding this much
# unread (Linux lets about 5 KiB in) is full, its stream stalled in the server.
READER_RCVBUF = 4096
SAMPLE_SECONDS = 0.05
# Readers are held until all are full and the API's RSS has not risen for QUIET_SECONDS (the
# first pages take PostgreSQL seconds), at most MAX_HOLD: under SSE_SEND_TIMEOUT_SECONDS (30)
# from their first stalled write, after which the service drops them.
MAX_HOLD_SECONDS, QUIET_SECONDS = 28.0, 2.0
RUN_TIMEOUT_SECONDS = 180.0


@dataclass
class Rss:
    """A process's RSS, sampled: its peak, and when it came."""

    pid: int
    began: float = field(default_factory=time.perf_counter)
    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)

    def sample(self) -> float:
        mib = rss_mib(self.pid) or 0.0
        self.samples.append((time.perf_counter() - self.began, mib))
        return mib

    async def follow(self) -> None:
        while True:
            self.sample()
            await anyio.sleep(SAMPLE_SECONDS)

    def peak(self) -> dict[str, float]:
        at, mib = max(self.samples, key=lambda sample: sample[1])
        return {"mib": mib, "at_s": at}


async def _completed(service: Service, run_id: str) -> None:
    """Wait for the run in the database: reading it through the API would load the API."""
    db = await asyncpg.connect(service.dsn)
    try:

        async def ended() -> bool:
            status = await db.fetchval("SELECT status FROM runs WHERE id = $1", run_id)
            if status not in ("queued", "running", "completed"):
                raise BenchError(f"run {run_id} ended {status}")
            return bool(status == "completed")

        await until(ended, RUN_TIMEOUT_SECONDS, interval=0.2)
    finally:
        await db.close()


async def large_output(service: Service) -> dict[str, Any]:
    """(a): one run whose tool returns LARGE_KIB, read whole and listed."""
    rss = Rss(service.api.pid)
    before = rss.sample()
    async with client.http(service.url, timeout=120) as http:
        text = prompt(turns=2, tool="blob", kilobytes=LARGE_KIB)
        began = time.perf_counter()
        run_id = (await client.create(http, text, agent="blobs"))["id"]
        await _completed(service, run_id)
        run_s = time.perf_counter() - began
        async with anyio.create_task_group() as group:
            group.start_soon(rss.follow)
            one = await http.get(f"/runs/{run_id}")
            listed = await http.get("/runs", params={"limit": 100})
            group.cancel_scope.cancel()
    for answer in (one, listed):
        if answer.status_code != 200:
            raise BenchError(f"{answer.request.url} answered {answer.status_code}")
    after = rss.sample()
    outputs = [call.get("output") for step in one.json()["steps"] for call in step["tool_calls"]]
    workers = {f"worker{i}": rss_mib(w.pid) for i, w in enumerate(service.workers)}
    return {
        "tool_output_kib": LARGE_KIB,
        "run_seconds": run_s,
        "stored_output_chars": [len(str(output)) for output in outputs],
        "run_json_mib": mib(len(one.content)),
        "list_json_mib": mib(len(listed.content)),
        "api_rss_mib": {"before": before, "peak": rss.peak()["mib"], "after": after},
        "worker_rss_mib": workers,
    }


def _idle_readers(service: Service, run_id: str, count: int) -> list[socket.socket]:
    """`count` connections asking for the run's events that will never read a byte."""
    request = events_request(service, run_id)
    readers: list[socket.socket] = []
    try:
        for _ in range(count):
            reader = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            readers.append(reader)
            # Before connecting: the window the server may fill is fixed at the handshake.
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READER_RCVBUF)
            reader.settimeout(10)
            reader.connect(("127.0.0.1", port(service)))
            reader.sendall(request)
    except BaseException:
        _close(readers)
        raise
    return readers


def _unread(reader: socket.socket) -> int:
    """Bytes received and not read, asked of the kernel (reading would open the window)."""
    waiting = fcntl.ioctl(reader.fileno(), termios.FIONREAD, b"\0" * 4)
    count: int = struct.unpack("i", waiting)[0]
    return count


def _close(readers: list[socket.socket]) -> None:
    for reader in readers:
        reader.close()


async def idle_streams(service: Service, *, outputs: int, readers: int) -> dict[str, Any]:
    """(b): a completed run with `outputs` of STREAMED_KIB, `readers` that never read."""
    async with client.http(service.url, timeout=120) as http:
        text = prompt(turns=outputs + 1, tool="blob", kilobytes=STREAMED_KIB)
        began = time.perf_counter()
        run_id = (await client.create(http, text, agent="blobs"))["id"]
        await _completed(service, run_id)
        run_s = time.perf_counter() - began
        rss = Rss(service.api.pid)
        before = rss.sample()
        cpu = meter(service).start()
        sockets = await anyio.to_thread.run_sync(_idle_readers, service, run_id, readers)
        full, full_at = 0, None
        try:
            top, risen = before, 0.0
            while True:
                await anyio.sleep(SAMPLE_SECONDS)
                now = rss.sample()
                held = rss.samples[-1][0]
                if now > top + 1:  # MiB: noise aside
                    top, risen = now, held
                full = sum(_unread(reader) >= READER_RCVBUF for reader in sockets)
                if full == readers and full_at is None:
                    full_at = held
                if held >= MAX_HOLD_SECONDS or (
                    full_at is not None and held - risen >= QUIET_SECONDS
                ):
                    break
        finally:
            used = cpu.stop()
            _close(sockets)
        # The service still answers once they are gone (a reader must not break it).
        alive = await http.get(f"/runs/{run_id}/events", headers={"Last-Event-ID": "999999"})
    log(f"hostile memory: {readers} idle readers: API RSS {before:.0f} -> {top:.0f} MiB")
    return {
        "outputs": outputs,
        "output_kib": STREAMED_KIB,
        "readers": readers,
        "run_seconds": run_s,
        "held_seconds": rss.samples[-1][0],
        "readers_full": full,
        "all_full_at_s": full_at,
        "cpu_ms_while_held": used,
        "api_rss_mib": {"before": before, "peak": rss.peak()["mib"]},
        "peak_at_s": rss.peak()["at_s"],
        "after_readers_left": {"status": alive.status_code, "api_rss_mib": rss.sample()},
    }
