"""Timing 2-turn runs in one process against the fake, beside the bare `openai` client doing the
same two calls (the floor): shared by our engine's child process (`bench.engine_child`, root
project) and the openai-agents Runner's (`bench/peers/runner.py`, peers project), so this module
imports neither `app` nor any peer.

Runs go one at a time, in rounds that alternate floor and contender so drift in the machine's
speed falls on both; each reports wall ms per turn and CPU ms per turn of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import openai

PROMPT = "turns=2"  # the fake: a call to `add`, then text (see bench.fake)
TURNS = 2
INSTRUCTIONS = "You add numbers. Use the add tool."
ADD_SPEC: Any = {  # Any: the SDK's TypedDicts would only restate it
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}

RunOnce = Callable[[], Awaitable[None]]


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def floor(client: openai.AsyncOpenAI) -> RunOnce:
    """The two streamed requests of a run with the bare client: no framework at all."""

    async def stream(messages: Any) -> list[Any]:
        calls: dict[int, list[str]] = {}
        response = await client.chat.completions.create(
            model="bench",
            messages=messages,
            tools=[ADD_SPEC],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in response:
            for part in (chunk.choices[0].delta.tool_calls or ()) if chunk.choices else ():
                entry = calls.setdefault(part.index, ["", "", ""])
                entry[0] = part.id or entry[0]
                if part.function is not None:
                    entry[1] += part.function.name or ""
                    entry[2] += part.function.arguments or ""
        return [calls[index] for index in sorted(calls)]

    async def run_once() -> None:
        first = [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": PROMPT},
        ]
        [(call_id, name, arguments)] = await stream(first)
        output = str(add(**json.loads(arguments)))
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        second = [
            *first,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": output},
        ]
        if await stream(second):
            raise AssertionError("the fake asked for a tool again")

    return run_once


async def _measure(run_once: RunOnce, runs: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(runs):
        await run_once()
    return time.perf_counter() - wall, time.process_time() - cpu


async def compare(contender: RunOnce, floor_run: RunOnce, runs: int, rounds: int) -> dict[str, Any]:
    """Warm both up, then alternate them; per-turn figures of each and the difference."""
    totals = {"floor": [0.0, 0.0], "contender": [0.0, 0.0]}
    for run_once in (floor_run, contender):
        await _measure(run_once, 20)
    for round_ in range(rounds):
        order = [("floor", floor_run), ("contender", contender)]
        for name, run_once in order if round_ % 2 == 0 else order[::-1]:
            wall, cpu = await _measure(run_once, runs // rounds)
            totals[name][0] += wall
            totals[name][1] += cpu
    turns = (runs // rounds) * rounds * TURNS
    figures = {
        name: {"ms_per_turn": wall * 1000 / turns, "cpu_ms_per_turn": cpu * 1000 / turns}
        for name, (wall, cpu) in totals.items()
    }
    figures["overhead"] = {
        key: figures["contender"][key] - figures["floor"][key] for key in figures["floor"]
    }
    return figures | {"runs": runs, "turns": turns}


def main(make: Callable[[str], tuple[RunOnce, RunOnce]], argv: Sequence[str] | None = None) -> None:
    """`make(base_url)` gives the contender and the floor; the figures go to stdout as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    async def go() -> dict[str, Any]:
        contender, floor_run = make(args.base_url)
        return await compare(contender, floor_run, args.runs, args.rounds)

    print(json.dumps(asyncio.run(go())))
