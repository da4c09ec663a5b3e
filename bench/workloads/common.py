"""What several workloads do: drive one-turn runs to saturation and account for the CPU."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from bench import client
from bench.context import Context
from bench.cpu import CpuMeter, service_ms
from bench.fake import prompt
from bench.load import Step, best, sweep
from bench.procs import Service

ONE_TURN = prompt(turns=1)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def meter(service: Service) -> CpuMeter:
    pids = service.pids()
    if service.postgres_pid is not None:
        pids["postgres"] = service.postgres_pid
    return CpuMeter(pids)


@dataclass
class Saturation:
    """A sweep's best step, and the CPU its runs cost."""

    best: Step
    cpu_ms_per_run: dict[str, float]
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def service_ms_per_run(self) -> float | None:
        return service_ms(self.cpu_ms_per_run) or None

    def details(self) -> dict[str, Any]:
        return {
            "runs_per_s": self.best.throughput,
            "cpu_ms_per_run": self.cpu_ms_per_run,
            "steps": self.steps,
        }


async def saturate(
    service: Service,
    http: httpx.AsyncClient,
    *,
    text: str,
    turns: int,
    start_rate: float,
    seconds: float,
    label: str,
) -> Saturation:
    """Runs of `text` (POST /runs?wait) at rising constant rates until the service saturates;
    each step's service CPU per completed run is kept beside its figures."""
    cpu: dict[int, dict[str, float]] = {}
    steps: list[dict[str, Any]] = []
    meters = [meter(service).start()]

    async def send(_: int) -> None:
        await client.completed(http, text, turns)

    def on_step(step: Step) -> None:
        used = meters[-1].stop()
        per_run = {name: ms / max(1, step.completed) for name, ms in used.items()}
        cpu[id(step)] = per_run
        steps.append(step.summary() | {"cpu_ms_per_run": per_run})
        log(f"{label}: offered {step.rate:.0f}/s -> {step.throughput:.1f}/s, p99 {step.ms(99)} ms")
        meters.append(meter(service).start())

    found = await sweep(send, start_rate=start_rate, seconds=seconds, on_step=on_step)
    await drain(http)
    top = best(found)
    return Saturation(top, cpu[id(top)], steps)


async def saturate_one_turn(
    ctx: Context, service: Service, http: httpx.AsyncClient, *, start_rate: float, label: str
) -> Saturation:
    """W1's sweep: one-turn runs at rising rates, each rate held for the run's step length."""
    return await saturate(
        service,
        http,
        text=ONE_TURN,
        turns=1,
        start_rate=start_rate,
        seconds=ctx.pick(10, 3),
        label=label,
    )


async def drain(http: httpx.AsyncClient, seconds: float = 300) -> None:
    """Wait until no run is queued or running: runs a saturated step left behind (their
    `?wait` gave up) would load whatever is measured next."""

    async def idle() -> bool:
        try:
            response = await http.get("/runs", params={"status": ["queued", "running"], "limit": 1})
        except httpx.TransportError:
            # A kept-alive connection the server closed as this request went out (its idle
            # timeout, after a saturated step): the next poll opens a new one.
            return False
        return response.status_code == 200 and not response.json()["items"]

    await until(idle, seconds, interval=0.5)


async def until(done: Callable[[], Awaitable[bool]], seconds: float, interval: float = 0.1) -> None:
    """Poll `done` until it holds; TimeoutError after `seconds`."""
    with anyio.fail_after(seconds):
        while True:
            if await done():
                return
            await anyio.sleep(interval)
