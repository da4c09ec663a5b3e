"""The flood part: one client opens thousands of event streams; another reads a run meanwhile."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio
import httpx
from anyio.abc import SocketStream

from bench import client
from bench.context import Context
from bench.fake import prompt
from bench.load import percentile
from bench.procs import BenchError, Service
from bench.workloads.common import log, meter
from bench.workloads.hostile.common import events_request, port

PARKED = prompt(turns=2, tool="delete_record")
PROBE_RATE = 20.0  # GET /runs/{id} per second, before and during the flood
OPEN_TIMEOUT_SECONDS = 60.0
# Once every stream was answered, the probe goes on this long: what do the accepted ones cost
# while they are held?
HELD_SECONDS = 5.0


async def _open_stream(service: Service, request: bytes) -> tuple[int, SocketStream]:
    """A connection asking for an event stream, and the status it was answered."""
    stream = await anyio.connect_tcp("127.0.0.1", port(service))
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


async def flood(ctx: Context, service: Service, count: int) -> dict[str, Any]:
    async with client.http(service.url, connections=8) as http:
        parked = await client.create(http, PARKED, wait=client.WAIT_SECONDS)
        if parked["status"] != "pending_approval":
            raise BenchError(f"the run to watch ended {parked['status']}")
        path = f"/runs/{parked['id']}"
        quiet = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(_timer, ctx.pick(10.0, 5.0), quiet)
            alone = await _probe(http, path, quiet)
        request = events_request(service, parked["id"])
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
