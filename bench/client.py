"""Talking to the service over HTTP as a client would."""

from __future__ import annotations

from typing import Any

import httpx

from bench.load import Failed

WAIT_SECONDS = 30
AGENT = "triage"  # the bundled example agent: it has `add`, `delete_record` and a handoff


def http(
    base_url: str, connections: int = 1000, timeout: float = WAIT_SECONDS + 30
) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)


async def create(
    client: httpx.AsyncClient, text: str, *, wait: float | None = None, **body: Any
) -> dict[str, Any]:
    """POST /runs; with `wait`, held until the run rests."""
    params = {"wait": wait} if wait is not None else None
    response = await client.post(
        "/runs", params=params, json={"agent": AGENT, "input": text, **body}
    )
    if response.status_code != 201:
        raise Failed(f"POST /runs answered {response.status_code}: {response.text[:200]}")
    run: dict[str, Any] = response.json()
    return run


async def completed(
    client: httpx.AsyncClient, text: str, turns: int, **body: Any
) -> dict[str, Any]:
    """A run created and held until it rests, which must be `completed` after `turns` turns."""
    run = await create(client, text, wait=WAIT_SECONDS, **body)
    if run["status"] != "completed":
        raise Failed(f"run {run['status']}: {run.get('error')}")
    if run["usage"]["requests"] != turns:
        raise Failed(f"run made {run['usage']['requests']} model calls, not {turns}")
    return run
