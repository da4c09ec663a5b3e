"""The `worker` process: an executor on PostgreSQL until a stop signal, its metrics served on a
port of its own."""

from __future__ import annotations

import signal
from wsgiref.simple_server import WSGIServer

import anyio
import structlog
from prometheus_client import start_http_server

from app.runtime.agents import AgentsModule
from app.runtime.runtime import Runtime
from app.settings import Settings

log = structlog.get_logger("app.runtime")


async def run_worker(
    settings: Settings,
    stop_signals: tuple[signal.Signals, ...],
    agents_module: AgentsModule | None = None,
) -> None:
    metrics_server: WSGIServer | None = None
    try:
        async with Runtime.running(
            settings, agents_module=agents_module, serves_api=False
        ) as runtime:
            if settings.metrics_port is not None:
                # A thread of prometheus-client's own: a scrape never waits on the event loop.
                metrics_server, _ = start_http_server(settings.metrics_port, addr=settings.host)
                log.info("metrics.serving", host=settings.host, port=settings.metrics_port)
            with anyio.open_signal_receiver(*stop_signals) as received:
                async for signum in received:
                    log.info("executor.signal", signal=signum)
                    runtime.stop()
                    break
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
