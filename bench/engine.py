"""Turn throughput of the agent-runs engine next to the openai-agents SDK, over one fake model.

What it measures
----------------
One `FakeModelServer` (an OpenAI-compatible Chat Completions fake, on 127.0.0.1 in a thread of
this process) serves a two-turn script with no delay: a call to the tool `add`, then the text
"The sum is 3.". The same run, "add 1 and 2" to an agent with the one tool `add`, goes through:

- `bare openai`: the raw `openai.AsyncOpenAI` client sending the same two streamed
  `chat.completions` requests a run needs, with no agent framework. This is the floor: the fake,
  HTTP and the client's own stream parsing.
- `agent-runs`: `Engine.start` + `Engine.run` (which always streams, usage included).
- `openai-agents`: `agents.Runner.run_streamed` with `OpenAIChatCompletionsModel` (streaming,
  usage included, tracing off), every event drained. The streamed runner is the closest
  equivalent of our always-streaming engine.

Each framework gets one `AsyncOpenAI` client of its own, reused by every run. Each run asserts
its final output, and the fake's request count must rise by exactly two per run, so a broken
comparison fails instead of printing figures. A short warm-up of every framework comes first and
is not counted; then the runs are split into rounds (`--rounds`, 5 by default) taken in turn by
the three, in a rotating order, so drift in the machine's speed falls on all of them alike.

A turn is one model call (two per run). `turns/s` is the throughput: turns over the wall time of
all runs. `ms/turn` is the mean latency: each run's wall time over its turns, averaged; with
`--concurrency 1` it is 1000 / turns/s. `overhead` is ms/turn minus the floor's ms/turn: the time
a framework adds per turn on top of the HTTP round trip. The fake shares this process, and its
GIL, with the clients: the whole benchmark is one core's worth of Python, so more concurrency
buys no throughput, and above 1 the ms/turn figures are mostly time spent queueing for it (a
framework's CPU cost is multiplied by the runs ahead of it); compare turns/s there.

Run it
------
    uv run python bench/engine.py                      # 300 runs, one at a time
    uv run python bench/engine.py --concurrency 8      # 8 runs in flight
    uv run python bench/engine.py --runs 1000 --json figures.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import agents
import anyio
import openai
from openai.types.chat import ChatCompletionMessageParam

from app import Agent, tool
from app.engine import Completed, Engine, ModelRouter, OpenAIProvider
from app.testing import FakeModel, FakeModelServer, call, text

MODEL = "bench-model"
AGENT = "calc"
INSTRUCTIONS = "You add numbers. Use the add tool."
PROMPT = "add 1 and 2"
ANSWER = "The sum is 3."
TURNS_PER_RUN = 2

PEER_MODE = "Runner.run_streamed, events drained (Chat Completions, stream=True)"
FLOOR_MODE = "AsyncOpenAI chat.completions.create(stream=True), 2 per run"

FLOOR = "bare openai (floor)"
OURS = "agent-runs"
PEER = "openai-agents"

RunOnce = Callable[[], Awaitable[None]]
Close = Callable[[], Awaitable[None]]


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@dataclass(frozen=True)
class Figures:
    """One framework's measurement."""

    name: str
    runs: int
    turns: int
    seconds: float
    turns_per_s: float
    ms_per_turn: float
    overhead_ms_per_turn: float | None = None


@dataclass(frozen=True)
class Timing:
    seconds: float
    latencies: list[float]  # per run, seconds


async def measure(run_once: RunOnce, runs: int, concurrency: int) -> Timing:
    """Run `run_once` `runs` times with at most `concurrency` in flight."""
    latencies: list[float] = []
    left = runs

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            await run_once()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(min(concurrency, runs)):
            group.start_soon(worker)
    return Timing(time.perf_counter() - started, latencies)


def figures(name: str, timings: Sequence[Timing]) -> Figures:
    """The figures of all of one contender's rounds together."""
    latencies = [latency for timing in timings for latency in timing.latencies]
    seconds = sum(timing.seconds for timing in timings)
    turns = len(latencies) * TURNS_PER_RUN
    ms_per_turn = statistics.fmean(latencies) * 1000 / TURNS_PER_RUN
    return Figures(name, len(latencies), turns, seconds, turns / seconds, ms_per_turn)


# --- the three ways to do one run -----------------------------------------------------------


def ours(base_url: str) -> tuple[RunOnce, Close]:
    """One run through the agent-runs engine, and how to close its client."""
    agent = Agent(name=AGENT, instructions=INSTRUCTIONS, model=MODEL, tools=[tool(add)])
    router = ModelRouter(OpenAIProvider(base_url=base_url))
    engine = Engine([agent], router)

    async def run_once() -> None:
        state = engine.start(AGENT, PROMPT)
        result = await engine.run(state)
        assert isinstance(result.outcome, Completed), result.outcome
        assert result.outcome.output == ANSWER, result.outcome.output
        assert state.turns == TURNS_PER_RUN, state.turns

    return run_once, router.aclose


def peer(base_url: str) -> tuple[RunOnce, Close]:
    """One run through openai-agents' streamed runner, and how to close its client."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused")
    agent: agents.Agent[None] = agents.Agent(
        name=AGENT,
        instructions=INSTRUCTIONS,
        model=agents.OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
        # The SDK asks for usage in the stream only from api.openai.com; ours always does.
        model_settings=agents.ModelSettings(include_usage=True),
        tools=[agents.function_tool(add)],
    )

    async def run_once() -> None:
        result = agents.Runner.run_streamed(agent, PROMPT)
        async for _ in result.stream_events():
            pass
        assert result.is_complete
        assert result.final_output == ANSWER, result.final_output
        assert len(result.raw_responses) == TURNS_PER_RUN, len(result.raw_responses)

    return run_once, client.close


def floor(base_url: str) -> tuple[RunOnce, Close]:
    """The same two streamed requests with the bare client, and how to close it."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused")
    tools: list[Any] = [tool(add).spec]
    first: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": PROMPT},
    ]

    async def stream(messages: Sequence[ChatCompletionMessageParam]) -> tuple[str, list[Any]]:
        """The streamed reply's text and its tool calls as `[id, name, arguments]`."""
        content: list[str] = []
        calls: dict[int, list[Any]] = {}
        response = await client.chat.completions.create(
            model=MODEL,
            messages=messages,
            tools=tools,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with response:
            async for chunk in response:
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                content.append(delta.content or "")
                for part in delta.tool_calls or ():
                    entry = calls.setdefault(part.index, ["", "", ""])
                    entry[0] = part.id or entry[0]
                    if part.function is not None:
                        entry[1] += part.function.name or ""
                        entry[2] += part.function.arguments or ""
        return "".join(content), [calls[index] for index in sorted(calls)]

    async def run_once() -> None:
        _, tool_calls = await stream(first)
        assert len(tool_calls) == 1, tool_calls
        call_id, name, arguments = tool_calls[0]
        assert name == "add", name
        output = str(add(**json.loads(arguments)))
        second: list[ChatCompletionMessageParam] = [
            *first,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": output},
        ]
        answer, more_calls = await stream(second)
        assert not more_calls, more_calls
        assert answer == ANSWER, answer

    return run_once, client.close


# --- running and reporting ------------------------------------------------------------------


async def bench(
    fake: FakeModel, base_url: str, *, runs: int, rounds: int, warmup: int, concurrency: int
) -> list[Figures]:
    """Warm every contender up, then measure them in interleaved rounds; the floor first."""
    agents.set_tracing_disabled(True)
    contenders = {
        FLOOR: floor(base_url),
        OURS: ours(base_url),
        PEER: peer(base_url),
    }
    names = list(contenders)
    timings: dict[str, list[Timing]] = {name: [] for name in names}
    try:
        for name in names:
            await measure(contenders[name][0], warmup, concurrency)
        for round_ in range(rounds):
            count = runs // rounds + (1 if round_ < runs % rounds else 0)
            # Rotate the order so no contender always runs right after another.
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                seen = len(fake.requests_for(MODEL))
                timings[name].append(await measure(contenders[name][0], count, concurrency))
                sent = len(fake.requests_for(MODEL)) - seen
                assert sent == count * TURNS_PER_RUN, f"{name}: {sent} model calls, {count} runs"
    finally:
        for _, close in contenders.values():
            await close()
    results = {name: figures(name, timings[name]) for name in names}
    base = results[FLOOR].ms_per_turn
    return [
        result
        if name == FLOOR
        else Figures(**{**asdict(result), "overhead_ms_per_turn": result.ms_per_turn - base})
        for name, result in results.items()
    ]


def table(results: Sequence[Figures]) -> str:
    header = ("name", "runs", "turns", "seconds", "turns/s", "ms/turn", "overhead ms/turn")
    rows = [
        (
            r.name,
            str(r.runs),
            str(r.turns),
            f"{r.seconds:.3f}",
            f"{r.turns_per_s:.1f}",
            f"{r.ms_per_turn:.3f}",
            "-" if r.overhead_ms_per_turn is None else f"{r.overhead_ms_per_turn:+.3f}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "runs": args.runs,
        "rounds": min(args.rounds, args.runs),
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "turns_per_run": TURNS_PER_RUN,
        "peer_mode": PEER_MODE,
        "floor_mode": FLOOR_MODE,
        "python": platform.python_version(),
        "openai": version("openai"),
        "openai_agents": version("openai-agents"),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    def at_least(minimum: int) -> Callable[[str], int]:
        def parse(value: str) -> int:
            number = int(value)
            if number < minimum:
                raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
            return number

        return parse

    positive = at_least(1)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=positive, default=300, help="measured runs (default 300)")
    parser.add_argument(
        "--concurrency", type=positive, default=1, help="runs in flight at once (default 1)"
    )
    parser.add_argument(
        "--rounds",
        type=positive,
        default=5,
        help="split the runs into this many interleaved rounds per framework (default 5)",
    )
    parser.add_argument(
        "--warmup",
        type=at_least(0),
        default=20,
        help="uncounted runs first, per framework (default 20)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    fake = FakeModel()
    fake.script(MODEL, [call("add", {"a": 1, "b": 2}), text(ANSWER)])
    with FakeModelServer(fake) as server:
        results = anyio.run(
            lambda: bench(
                fake,
                server.base_url,
                runs=args.runs,
                rounds=min(args.rounds, args.runs),
                warmup=args.warmup,
                concurrency=args.concurrency,
            )
        )
    by_name = {result.name: result for result in results}
    ratio = by_name[OURS].turns_per_s / by_name[PEER].turns_per_s
    env = environment(args)
    print(
        f"{args.runs} runs x {TURNS_PER_RUN} turns in {env['rounds']} interleaved rounds, "
        f"concurrency {args.concurrency}, warm-up {args.warmup} runs each"
    )
    print(f"python {env['python']}, openai {env['openai']}, openai-agents {env['openai_agents']}")
    print(f"floor: {FLOOR_MODE}")
    print(f"peer:  {PEER_MODE}")
    print()
    print(table(results))
    print()
    print(f"ours/peer turns/s: {ratio:.2f}x")
    if args.concurrency > 1:
        print("(ms/turn is latency and includes queueing for this one process; compare turns/s)")
    if args.json is not None:
        document = {
            "config": env,
            "results": [asdict(result) for result in results],
            "ours_over_peer_turns_per_s": ratio,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
