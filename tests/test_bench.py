"""The benchmark suite stays runnable: its options parse, its fake answers as the workloads
expect, and our engine's child process runs against the fake (a few seconds, no database)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import cast

import anyio
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall, ChatCompletionMessageParam

from app.testing.server import ThreadedServer
from bench.__main__ import parse_args
from bench.agents import blob
from bench.fake import app, prompt
from bench.procs import ROOT, Resources, child_env, start_fake


def test_options_select_workloads_and_refuse_unknown_ones() -> None:
    args = parse_args(["--quick", "--only", "w1, chaos"])
    assert args.quick
    assert args.only == ["w1", "chaos"]
    with pytest.raises(SystemExit):
        parse_args(["--only", "w99"])


def test_the_fake_calls_the_tool_then_answers() -> None:
    async def converse(base_url: str) -> tuple[list[str], str]:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
        async with client:
            user: ChatCompletionMessageParam = {
                "role": "user",
                "content": prompt(turns=2, words=2),
            }
            first = await client.chat.completions.create(model="bench", messages=[user])
            calls = [
                call
                for call in first.choices[0].message.tool_calls or []
                if isinstance(call, ChatCompletionMessageFunctionToolCall)
            ]
            assistant = cast(
                ChatCompletionMessageParam,
                first.choices[0].message.model_dump(exclude_none=True),
            )
            tool: ChatCompletionMessageParam = {
                "role": "tool",
                "tool_call_id": calls[0].id,
                "content": "5",
            }
            second = await client.chat.completions.create(
                model="bench", messages=[user, assistant, tool], stream=True
            )
            text = [chunk.choices[0].delta.content or "" async for chunk in second if chunk.choices]
            return [call.function.name for call in calls], "".join(text)

    with ThreadedServer(app) as server:
        names, text = anyio.run(converse, f"{server.url}/v1")
    assert names == ["add"]
    assert text == " word0 word1"


def test_the_fake_asks_blob_for_the_kilobytes_of_its_prompt() -> None:
    async def ask() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fake") as http:
            user = {"role": "user", "content": prompt(turns=2, tool="blob", kilobytes=3)}
            answer = await http.post(
                "/v1/chat/completions", json={"model": "bench", "messages": [user]}
            )
            call = answer.json()["choices"][0]["message"]["tool_calls"][0]["function"]
            assert call["name"] == "blob"
            return str(call["arguments"])

    arguments = json.loads(anyio.run(ask))
    assert arguments == {"kilobytes": 3}
    assert len(blob.function(**arguments)) == 3 * 1024


def test_the_fake_times_traced_requests_and_hands_them_over_once() -> None:
    async def converse() -> tuple[list[dict[str, float]], list[dict[str, float]]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fake") as http:
            user = {"role": "user", "content": prompt(turns=2, trace="t1")}
            first = await http.post(
                "/v1/chat/completions", json={"model": "bench", "messages": [user]}
            )
            assistant = first.json()["choices"][0]["message"]
            tool = {"role": "tool", "tool_call_id": "call_0", "content": "5"}
            await http.post(
                "/v1/chat/completions",
                json={"model": "bench", "messages": [user, assistant, tool]},
            )
            traced = (await http.get("/trace/t1")).json()
            again = (await http.get("/trace/t1")).json()
            return traced, again

    traced, again = anyio.run(converse)
    assert [entry["bytes"] > 0 for entry in traced] == [True, True]
    assert traced[0]["arrived"] <= traced[0]["answered"] <= traced[1]["arrived"]
    assert traced[1]["bytes"] > traced[0]["bytes"]
    assert again == []


def test_the_engine_runs_against_the_fake_in_its_own_process(tmp_path: Path) -> None:
    with Resources() as stack:
        fake = start_fake(stack, tmp_path)
        options = ["--base-url", fake.base_url, "--runs", "10", "--rounds", "1"]
        result = subprocess.run(
            [sys.executable, "-m", "bench.engine_child", *options],
            cwd=ROOT,
            env=child_env(PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    figures = json.loads(result.stdout)
    assert figures["turns"] == 20
    assert figures["contender"]["ms_per_turn"] > 0
