"""The LangGraph peer: `langgraph dev` (in-memory, from the peers project) running an equivalent
tool-calling agent on the same fake, `POST /runs/wait`; beside it our service (SQLite, one
process, like `langgraph dev`) persisting every turn, and as deployed (PostgreSQL, 1 API + 2
workers); 2-turn runs at the same concurrency."""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

import anyio
import httpx

from bench import client
from bench.context import Context
from bench.cpu import CpuMeter, service_ms
from bench.fake import prompt
from bench.load import Failed, Step, closed_loop
from bench.procs import PEERS, Resources, child_env, free_port, running, wait_until_ready
from bench.report import Figure, Outcome, at_least, at_most
from bench.workloads.common import log, meter

CONCURRENCY = 16
TWO_TURNS = prompt(turns=2)


def _langgraph(stack: ExitStack, ctx: Context) -> tuple[str, int]:
    workdir = ctx.workdir("langgraph")
    # Run in the temp dir, since `langgraph dev` flushes its "in-memory" store to
    # ./.langgraph_api; its config's paths are relative to that, so they are written whole.
    config = workdir / "langgraph.json"
    graph = {"dependencies": [str(PEERS)], "graphs": {"agent": f"{PEERS / 'graph.py'}:graph"}}
    config.write_text(json.dumps(graph))
    port = free_port()
    args = [
        *("uv", "run", "--project", str(PEERS), "langgraph", "dev"),
        *("--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload"),
        *("--config", str(config), "--n-jobs-per-worker", str(CONCURRENCY)),
        *("--server-log-level", "WARNING"),
    ]
    env = child_env(
        OPENAI_BASE_URL=ctx.fake.base_url,
        OPENAI_API_KEY="unused",
        # Offline: no LangSmith tracing, no usage analytics, no browser.
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGSMITH_API_KEY="",
        LANGCHAIN_API_KEY="",
    )
    process = stack.enter_context(running("langgraph dev", args, env, workdir / "langgraph.log"))
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(f"{url}/ok", process, "langgraph dev")
    return url, process.pid


async def _drive(send: Any, runs: int, pids: dict[str, int]) -> tuple[Step, dict[str, float]]:
    await closed_loop(send, 20, CONCURRENCY)  # warm-up
    cpu = CpuMeter(pids).start()
    step = await closed_loop(send, runs, CONCURRENCY)
    return step, cpu.stop()


async def _peer(url: str, pid: int, runs: int) -> tuple[Step, dict[str, float]]:
    async with client.http(url) as http:

        async def send(_: int) -> None:
            body = {
                "assistant_id": "agent",
                "input": {"messages": [{"role": "user", "content": TWO_TURNS}]},
            }
            response = await http.post("/runs/wait", json=body)
            if response.status_code != 200:
                raise Failed(f"POST /runs/wait answered {response.status_code}")
            messages = response.json().get("messages", [])
            if len(messages) != 4:  # user, tool call, tool result, answer
                raise Failed(f"{len(messages)} messages: {str(messages)[:200]}")

        return await _drive(send, runs, {"langgraph": pid})


async def _ours(
    http: httpx.AsyncClient, pids: dict[str, int], runs: int
) -> tuple[Step, dict[str, float]]:
    async def send(_: int) -> None:
        await client.completed(http, TWO_TURNS, 2)

    return await _drive(send, runs, pids)


def _ours_on(ctx: Context, database: str, runs: int) -> tuple[Step, dict[str, float]]:
    with Resources() as stack:
        service = ctx.service(stack, f"langgraph-ours-{database}", database=database)

        async def ours() -> tuple[Step, dict[str, float]]:
            async with client.http(service.url) as http:
                return await _ours(http, meter(service).pids, runs)

        step, cpu = anyio.run(ours)
    log(f"agent-runs ({database}): {step.throughput:.1f} runs/s")
    return step, cpu


def run(ctx: Context) -> Outcome:
    runs = ctx.count(1000, 200)
    with Resources() as stack:
        url, pid = _langgraph(stack, ctx)
        theirs, their_cpu = anyio.run(_peer, url, pid, runs)
    log(f"langgraph dev: {theirs.throughput:.1f} runs/s")
    mine, my_cpu = _ours_on(ctx, "sqlite", runs)
    # Beside it, as deployed: PostgreSQL, 1 API + 2 workers.
    deployed, deployed_cpu = _ours_on(ctx, "postgres", runs)
    ratio = mine.throughput / theirs.throughput if theirs.throughput else None
    their_ms = their_cpu.get("langgraph", 0) / max(1, theirs.completed)
    my_ms = service_ms(my_cpu) / max(1, mine.completed)
    deployed_ms = service_ms(deployed_cpu) / max(1, deployed.completed)
    cpu_ratio = my_ms / their_ms if their_ms else None
    deployed_ratio = deployed_ms / their_ms if their_ms else None
    return Outcome(
        figures=[
            Figure(
                "peer",
                f"langgraph dev: 2-turn runs/s at concurrency {CONCURRENCY}",
                theirs.throughput,
                "/s",
            ),
            Figure(
                "peer",
                "agent-runs (SQLite, every turn stored): 2-turn runs/s",
                mine.throughput,
                "/s",
            ),
            Figure("peer", "agent-runs / langgraph dev", ratio, "x", ">= 10x", at_least(ratio, 10)),
            Figure("peer", "langgraph dev: CPU per run", their_ms, "ms"),
            Figure("peer", "agent-runs: service CPU per run", my_ms, "ms"),
            Figure(
                "peer",
                "service CPU per run, agent-runs / langgraph dev",
                cpu_ratio,
                "x",
                "<= 0.5x",
                at_most(cpu_ratio, 0.5),
            ),
            Figure("peer", "agent-runs on PostgreSQL: service CPU per run", deployed_ms, "ms"),
            Figure(
                "peer",
                "the same on PostgreSQL (1 API + 2 workers) / langgraph dev",
                deployed_ratio,
                "x",
                "<= 0.5x",
                at_most(deployed_ratio, 0.5),
            ),
        ],
        details={
            "concurrency": CONCURRENCY,
            "langgraph": theirs.summary(),
            "agent-runs": mine.summary(),
            "agent-runs-postgres": deployed.summary(),
            "cpu_ms_per_run": {
                "langgraph": {k: v / max(1, theirs.completed) for k, v in their_cpu.items()},
                "agent-runs": {k: v / max(1, mine.completed) for k, v in my_cpu.items()},
                "agent-runs-postgres": {
                    k: v / max(1, deployed.completed) for k, v in deployed_cpu.items()
                },
            },
        },
    )
