"""What the parts of the hostile workload share: the service's port and a raw stream request."""

from __future__ import annotations

from urllib.parse import urlsplit

from bench.procs import BenchError, Service


def port(service: Service) -> int:
    port = urlsplit(service.url).port
    if port is None:
        raise BenchError(f"no port in {service.url}")
    return port


def events_request(service: Service, run_id: str) -> bytes:
    return (
        f"GET /runs/{run_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{port(service)}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()


def mib(size: int) -> float:
    return size / 2**20
