"""Run in a separate Python process: read stored run states on stdin, finish each, print them."""

from __future__ import annotations

import json
import sys

import anyio

from app.engine import RunState
from tests.engine.resume_agents import build_engine


async def main(base_url: str) -> None:
    engine = build_engine(base_url)
    finished = []
    for stored in json.loads(sys.stdin.read()):
        state = RunState.from_json(stored)
        await engine.run(state)
        finished.append(state.to_json())
    await engine.aclose()
    print(json.dumps(finished))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
