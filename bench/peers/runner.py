"""The openai-agents SDK's `Runner` on 2-turn runs against the fake, beside the bare client:
`uv run --project bench/peers python bench/peers/runner.py --base-url URL` from the repository
root (it imports `bench.turns`, which needs neither `app` nor this project's packages)."""

from __future__ import annotations

import sys
from pathlib import Path

import agents
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `bench`

from bench import turns


def make(base_url: str) -> tuple[turns.RunOnce, turns.RunOnce]:
    agents.set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    agent: agents.Agent[None] = agents.Agent(
        name="calc",
        instructions=turns.INSTRUCTIONS,
        model=agents.OpenAIChatCompletionsModel(model="bench", openai_client=client),
        # The SDK asks for usage in the stream only from api.openai.com; our engine always does.
        model_settings=agents.ModelSettings(include_usage=True),
        tools=[agents.function_tool(turns.add)],
    )

    async def run_once() -> None:
        # The streamed runner, every event drained: the equivalent of our always-streaming engine.
        result = agents.Runner.run_streamed(agent, turns.PROMPT)
        async for _ in result.stream_events():
            pass
        if len(result.raw_responses) != turns.TURNS:
            raise AssertionError(f"the Runner made {len(result.raw_responses)} model calls")

    floor_client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    return run_once, turns.floor(floor_client)


if __name__ == "__main__":
    turns.main(make)
