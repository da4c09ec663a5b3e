"""Hostile: what a backlog, large tool outputs and greedy clients cost, on PostgreSQL (1 API +
2 workers), each part on a service of its own (but the flood, after the backlog's) so none
inherits another's memory. Counts are full / `--quick`.

- **backlog**: 2,000 / 300 one-turn runs queued through the API while no worker runs, then 2
  workers started: runs/s from the first run started to the last finished (the runs' own
  timestamps), and seconds from starting the workers until the API lists nothing queued or
  running (their start-up included).
- **memory**, with the bench's own agents (`bench.agents`: `blob` returns K KiB of text):
  (a) the API's RSS while and after a run whose tool returned 50 MiB is read whole and listed
  (`GET /runs?limit=100`), and the sizes of those answers; (b) the API's RSS before, and at
  its peak while 30 / 10 readers hold `GET /runs/{id}/events` of a completed run with 8 / 4
  outputs of 4 MiB and read nothing (raw sockets with a small receive buffer), until all are
  full and the RSS is still, or 28 s; once with `MAX_TOOL_OUTPUT_BYTES` at 8 MiB (nothing cut:
  the streams' own memory) and once at its default (1 MiB). Runs are awaited in the database,
  so the API never reads one before it is measured.
- **flood**: one client opens 2,000 / 1,000 event streams of a parked run all at once and holds
  those accepted; meanwhile another times `GET /runs/{id}` (20/s, open loop) until every stream
  was answered, then for 5 s more while the accepted are held, against the same for 10 / 5 s
  before the flood; streams accepted, refused (429) and failed.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio
import asyncpg
import httpx
from anyio.abc import SocketStream

from bench import client
from bench.context import Context
from bench.cpu import rss_mib
from bench.fake import prompt
from bench.load import percentile
from bench.procs import ROOT, BenchError, Resources, Service
from bench.report import Figure, Outcome
from bench.workloads.common import ONE_TURN, log, meter, until

Measure = Callable[[Service], Awaitable[dict[str, Any]]]

# --- backlog
POST_LANES = 32  # runs created this many at a time
# --- memory
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
# --- flood
PARKED = prompt(turns=2, tool="delete_record")
PROBE_RATE = 20.0  # GET /runs/{id} per second, before and during the flood
OPEN_TIMEOUT_SECONDS = 60.0
# Once every stream was answered, the probe goes on this long: what do the accepted ones cost
# while they are held?
HELD_SECONDS = 5.0


def _port(service: Service) -> int:
    port = urlsplit(service.url).port
    if port is None:
        raise BenchError(f"no port in {service.url}")
    return port


def _events_request(service: Service, run_id: str) -> bytes:
    return (
        f"GET /runs/{run_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{_port(service)}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()


def _mib(size: int) -> float:
    return size / 2**20


# --- backlog


async def _backlog(ctx: Context, service: Service, count: int) -> dict[str, Any]:
    async with client.http(service.url, connections=POST_LANES + 4) as http:
        numbers = iter(range(count))
        began = time.perf_counter()

        async def lane() -> None:
            for _ in numbers:
                run = await client.create(http, ONE_TURN)
                if run["status"] != "queued":
                    raise BenchError(f"a run was {run['status']} with no worker running")

        async with anyio.create_task_group() as group:
            for _ in range(POST_LANES):
                group.start_soon(lane)
        queued_s = time.perf_counter() - began
        log(f"hostile backlog: {count} runs queued in {queued_s:.1f} s; starting 2 workers")

        async def idle() -> bool:
            answer = await http.get("/runs", params={"status": ["queued", "running"], "limit": 1})
            return answer.status_code == 200 and not answer.json()["items"]

        started_wall, started = time.time(), time.perf_counter()
        for _ in range(2):
            service.start_worker()
        drained = True
        try:
            await until(idle, ctx.pick(300, 120), interval=0.2)
        except TimeoutError:
            drained = False
        wall_s = time.perf_counter() - started
        runs = await _all_runs(http)
    statuses = Counter(run["status"] for run in runs)
    begun = [
        datetime.fromisoformat(run["started_at"]).timestamp() for run in runs if run["started_at"]
    ]
    ended = [
        datetime.fromisoformat(run["finished_at"]).timestamp()
        for run in runs
        if run["status"] == "completed"
    ]
    span = max(ended) - min(begun) if ended and begun else None
    rate = len(ended) / span if span else None
    log(f"hostile backlog: {statuses} in {wall_s:.1f} s; {rate or 0:.1f} runs/s once started")
    return {
        "runs": count,
        "drained": drained,
        "statuses": dict(statuses),
        "queue_seconds": queued_s,
        "wall_seconds": wall_s if drained else None,
        "first_start_after_workers_s": min(begun) - started_wall if begun else None,
        "first_start_to_last_finish_s": span,
        "runs_per_s": rate,
    }


async def _all_runs(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        page = (await http.get("/runs", params=params)).json()
        runs += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return runs


# --- memory


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


async def _large_output(service: Service) -> dict[str, Any]:
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
        "run_json_mib": _mib(len(one.content)),
        "list_json_mib": _mib(len(listed.content)),
        "api_rss_mib": {"before": before, "peak": rss.peak()["mib"], "after": after},
        "worker_rss_mib": workers,
    }


def _idle_readers(service: Service, run_id: str, count: int) -> list[socket.socket]:
    """`count` connections asking for the run's events that will never read a byte."""
    request = _events_request(service, run_id)
    readers: list[socket.socket] = []
    try:
        for _ in range(count):
            reader = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            readers.append(reader)
            # Before connecting: the window the server may fill is fixed at the handshake.
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READER_RCVBUF)
            reader.settimeout(10)
            reader.connect(("127.0.0.1", _port(service)))
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


async def _idle_streams(service: Service, *, outputs: int, readers: int) -> dict[str, Any]:
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


# --- flood


async def _open_stream(service: Service, request: bytes) -> tuple[int, SocketStream]:
    """A connection asking for an event stream, and the status it was answered."""
    stream = await anyio.connect_tcp("127.0.0.1", _port(service))
    try:
        await stream.send(request)
        head = b""
        while b"\r\n" not in head:
            head += await stream.receive()
        return int(head.split(b" ", 2)[1]), stream
    except BaseException:
        await stream.aclose()
        raise


async def _probe(
    http: httpx.AsyncClient, path: str, stop: anyio.Event
) -> list[tuple[float, float]]:
    """GET `path` PROBE_RATE times a second until `stop`, each sent when due whatever the answers
    do (open loop): (when it was due, ms from then to its answer) of each."""
    samples: list[tuple[float, float]] = []
    start = time.perf_counter()

    async def one(due: float) -> None:
        answer = await http.get(path)
        if answer.status_code != 200:
            raise BenchError(f"GET {path} answered {answer.status_code}: {answer.text[:200]}")
        samples.append((due, (time.perf_counter() - due) * 1000))

    async with anyio.create_task_group() as group:
        sent = 0
        while not stop.is_set():
            due = start + sent / PROBE_RATE
            await anyio.sleep(max(0.0, due - time.perf_counter()))
            group.start_soon(one, due)
            sent += 1
    return samples


def _latencies(samples: list[tuple[float, float]]) -> dict[str, Any]:
    ms = [latency for _, latency in samples]
    return {"requests": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99)}


async def _timer(seconds: float, done: anyio.Event) -> None:
    await anyio.sleep(seconds)
    done.set()


async def _flood(ctx: Context, service: Service, count: int) -> dict[str, Any]:
    async with client.http(service.url, connections=8) as http:
        parked = await client.create(http, PARKED, wait=client.WAIT_SECONDS)
        if parked["status"] != "pending_approval":
            raise BenchError(f"the run to watch ended {parked['status']}")
        path = f"/runs/{parked['id']}"
        quiet = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(_timer, ctx.pick(10.0, 5.0), quiet)
            alone = await _probe(http, path, quiet)
        request = _events_request(service, parked["id"])
        answers: Counter[str] = Counter()
        held: list[SocketStream] = []
        answered: list[float] = []
        stop = anyio.Event()

        async def one() -> None:
            try:
                with anyio.fail_after(OPEN_TIMEOUT_SECONDS):
                    status, stream = await _open_stream(service, request)
            except (
                OSError,
                TimeoutError,
                anyio.EndOfStream,
                anyio.BrokenResourceError,
                ValueError,
            ) as exc:
                answers[f"error: {type(exc).__name__}"] += 1
                return
            finally:
                answered.append(time.perf_counter())
            answers[str(status)] += 1
            if status == 200:
                held.append(stream)
            else:
                await stream.aclose()

        async def flood() -> None:
            async with anyio.create_task_group() as openers:
                for _ in range(count):
                    openers.start_soon(one)
            await anyio.sleep(HELD_SECONDS)
            stop.set()

        began = time.perf_counter()
        cpu = meter(service).start()
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(flood)
                during = await _probe(http, path, stop)
        finally:
            for stream in held:
                await stream.aclose()
        used = cpu.stop()
        after = await http.get(path)
    last = max(answered)
    burst = _latencies([sample for sample in during if sample[0] < last])
    holding = _latencies([sample for sample in during if sample[0] >= last])
    log(f"hostile flood: {dict(answers)}; GET p99 {burst['p99_ms']} ms, then {holding['p99_ms']}")
    return {
        "streams": count,
        "answers": dict(answers),
        "accepted": answers["200"],
        "refused_429": answers["429"],
        "all_answered_s": last - began,
        "get_run_alone": _latencies(alone),
        "get_run_until_all_answered": burst,
        "get_run_while_held": holding | {"seconds": HELD_SECONDS},
        "get_run_after_flood": after.status_code,
        "cpu_ms_during_flood": used,
    }


# --- the figures


def _part(details: dict[str, Any], name: str, measure: Callable[[], dict[str, Any]]) -> None:
    """One part's details, or its error: a part that fails must not cost the others'."""
    log(f"--- hostile {name}")
    began = time.perf_counter()
    try:
        details[name] = measure()
    except Exception as exc:
        traceback.print_exc()
        details[name] = {"error": f"{type(exc).__name__}: {exc}"}
    details[name]["part_seconds"] = round(time.perf_counter() - began, 1)


def _backlog_and_flood(ctx: Context, runs: int, streams: int) -> dict[str, Any]:
    details: dict[str, Any] = {}
    with Resources() as stack:
        service = ctx.service(stack, "hostile-backlog", workers=0)
        _part(details, "backlog", lambda: anyio.run(_backlog, ctx, service, runs))
        while len(service.workers) < 2:  # the backlog failed before it started them
            service.start_worker()
        _part(details, "flood", lambda: anyio.run(_flood, ctx, service, streams))
    return details


def _memory(ctx: Context, name: str, settings: dict[str, str], part: Measure) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    # Returned after the block: mypy reads the bool of Resources.__exit__ as "may swallow".
    with Resources() as stack:
        service = ctx.service(stack, f"hostile-{name}", settings=BLOBS | settings)
        measured |= anyio.run(part, service)
    return measured


def _figures(details: dict[str, Any]) -> list[Figure]:
    backlog = details.get("backlog", {})
    large = details.get("large_output", {})
    uncut, capped = details.get("idle_readers_uncut", {}), details.get("idle_readers_capped", {})
    flood = details.get("flood", {})
    alone, burst = flood.get("get_run_alone", {}), flood.get("get_run_until_all_answered", {})
    holding = flood.get("get_run_while_held", {})
    # Counts as measured, so a quick run's figures say so ("?" where a part failed).
    runs, streams = backlog.get("runs", "?"), flood.get("streams", "?")
    readers, outputs = uncut.get("readers", "?"), uncut.get("outputs", "?")

    def figure(name: str, value: Any, unit: str) -> Figure:
        return Figure("hostile", name, None if value is None else float(value), unit)

    def rss(part: dict[str, Any], when: str) -> Any:
        return part.get("api_rss_mib", {}).get(when)

    idle = f"{readers} idle readers of {outputs} x {STREAMED_KIB // 1024} MiB outputs"
    return [
        figure(f"backlog: {runs} queued runs drained, runs/s", backlog.get("runs_per_s"), "/s"),
        figure("backlog: s from starting 2 workers to all done", backlog.get("wall_seconds"), "s"),
        figure(
            f"memory: run JSON, tool output {LARGE_KIB // 1024} MiB",
            large.get("run_json_mib"),
            "MiB",
        ),
        figure("memory: GET /runs?limit=100 JSON", large.get("list_json_mib"), "MiB"),
        figure("memory: API peak RSS serving those two", rss(large, "peak"), "MiB"),
        figure("memory: API RSS after them", rss(large, "after"), "MiB"),
        figure(f"memory: API RSS before {idle}", rss(uncut, "before"), "MiB"),
        figure("memory: API peak RSS with them, cap 8 MiB (uncut)", rss(uncut, "peak"), "MiB"),
        figure("memory: API RSS before them, default cap", rss(capped, "before"), "MiB"),
        figure("memory: API peak RSS with them, default cap", rss(capped, "peak"), "MiB"),
        figure("flood: GET /runs/{id} p50 alone", alone.get("p50_ms"), "ms"),
        figure("flood: GET /runs/{id} p99 alone", alone.get("p99_ms"), "ms"),
        figure(f"flood: GET p50 until {streams} streams answered", burst.get("p50_ms"), "ms"),
        figure("flood: GET p99 until then", burst.get("p99_ms"), "ms"),
        figure("flood: GET p99 while the accepted are held", holding.get("p99_ms"), "ms"),
        figure("flood: streams accepted", flood.get("accepted"), ""),
        figure("flood: streams refused (429)", flood.get("refused_429"), ""),
    ]


def run(ctx: Context) -> Outcome:
    details = _backlog_and_flood(ctx, ctx.count(2000, 300), ctx.count(2000, 1000))
    idle = partial(_idle_streams, outputs=ctx.count(8, 4), readers=ctx.count(30, 10))
    parts: tuple[tuple[str, dict[str, str], Measure], ...] = (
        ("large_output", {}, _large_output),
        ("idle_readers_uncut", {"MAX_TOOL_OUTPUT_BYTES": UNCUT}, idle),
        ("idle_readers_capped", {}, idle),
    )
    for name, settings, part in parts:
        _part(details, name, partial(_memory, ctx, name, settings, part))
    failed = {name: part["error"] for name, part in details.items() if "error" in part}
    error = "; ".join(f"{name}: {message}" for name, message in failed.items()) or None
    return Outcome(figures=_figures(details), details=details, error=error)
