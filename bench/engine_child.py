"""Our engine alone (no HTTP, no store) on 2-turn runs against the fake, beside the bare client:
`python -m bench.engine_child --base-url URL`, figures as JSON on stdout (see `bench.turns`)."""

from __future__ import annotations

import openai

from app import Agent, tool
from app.engine import Completed, Engine, ModelRouter, OpenAIProvider
from bench import turns


def make(base_url: str) -> tuple[turns.RunOnce, turns.RunOnce]:
    agent = Agent(
        name="calc", instructions=turns.INSTRUCTIONS, model="bench", tools=[tool(turns.add)]
    )
    engine = Engine([agent], ModelRouter(OpenAIProvider(base_url=base_url)))

    async def run_once() -> None:
        state = engine.start("calc", turns.PROMPT)
        result = await engine.run(state)
        if not isinstance(result.outcome, Completed) or state.turns != turns.TURNS:
            raise AssertionError(f"the engine ended with {result.outcome} after {state.turns}")

    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    return run_once, turns.floor(client)


if __name__ == "__main__":
    turns.main(make)
