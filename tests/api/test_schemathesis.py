"""Schemathesis, an outside tool, fuzzes the live service from the committed `openapi.yaml`.

Every operation of the document gets generated requests, valid and invalid ones, over real HTTP
with an API key (its CLI's coverage, fuzzing and stateful phases), and every answer must be
documented: no 5xx, a documented status, the documented content type, and a body that fits the
documented schema. Real agents, runs (one completed, some parked at `pending_approval`), call ids
and a session are offered to the generator beside its own values, so requests get past the 404s
and 422s into the service's logic. The fake model echoes, so generated runs end at once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from pydantic import SecretStr

from app.testing import FakeModel, call, text
from tests.api import agents as test_agents
from tests.api.conftest import LiveFactory
from tests.conftest import ROOT

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
KEY = "some-key"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
# Bounds: examples per operation and phase; seconds per request, and per event stream (a run's
# stream stays open until it ends: a parked run's is read for a few events and cut); the tool.
MAX_EXAMPLES = 25
REQUEST_TIMEOUT_SECONDS = 10
STREAM_TIMEOUT_SECONDS = 2
STREAM_EVENTS = 5
TOOL_LIMIT_SECONDS = 240
PARKED_RUNS = 3

pytestmark = pytest.mark.anyio


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def documented_operations() -> set[str]:
    document = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    return {
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method in operations
    }


def toml_list(values: list[str]) -> str:
    return json.dumps(values)  # a JSON list of plain strings is a TOML array too


async def seed(url: str, fake: FakeModel) -> dict[str, list[str]]:
    """Real values for the generator: runs parked and completed, their calls, a session."""
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=20) as client:

        async def create(body: dict[str, Any]) -> dict[str, Any]:
            response = await client.post("/runs", params={"wait": 10}, json=body)
            assert response.status_code == 201, response.text
            run: dict[str, Any] = response.json()
            return run

        fake.script("m", [call("delete_record", {"record_id": "r1"}), text("done")])
        parked = [await create({"agent": "calc", "input": "delete r1"}) for _ in range(PARKED_RUNS)]
        fake.reset()  # from here on the fake echoes: every generated run ends at once
        assert all(run["status"] == "pending_approval" for run in parked), parked
        done = await create({"agent": "calc", "input": "hello", "session_id": "seeded"})
        assert done["status"] == "completed", done
    return {
        "agents": [agent.name for agent in test_agents.agents],
        "tools": ["add", "delete_record"],
        "runs": [run["id"] for run in [*parked, done]],
        "calls": sorted({p["call_id"] for run in parked for p in run["pending_approvals"]}),
        "sessions": ["seeded"],
    }


def config(values: dict[str, list[str]]) -> str:
    """`schemathesis.toml`: the seeded values, each offered half of the time (or more)."""
    dictionaries = "".join(
        f"[dictionaries.{name}]\nvalues = {toml_list(entries)}\n\n"
        for name, entries in values.items()
    )
    return f"""{dictionaries}[parameters]
"body.agent" = {{ dictionary = "agents", probability = 0.8 }}
"path.name" = {{ dictionary = "agents", probability = 0.5 }}
"query.agent" = {{ dictionary = "agents", probability = 0.5 }}
"query.tool" = {{ dictionary = "tools", probability = 0.5 }}
"path.run_id" = {{ dictionary = "runs", probability = 0.5 }}
"body.decisions[*].call_id" = {{ dictionary = "calls", probability = 0.5 }}
"path.session_id" = {{ dictionary = "sessions", probability = 0.5 }}
"query.session_id" = {{ dictionary = "sessions", probability = 0.5 }}

[[operations]]
include-operation-id = "run_events"
request-timeout = {STREAM_TIMEOUT_SECONDS}
max-stream-events = {STREAM_EVENTS}
"""


async def test_schemathesis_finds_nothing_undocumented(
    serve_live: LiveFactory, fake: FakeModel, tmp_path: Path
) -> None:
    if not SCHEMATHESIS.exists():
        message = f"schemathesis is not installed at {SCHEMATHESIS}"
        if in_ci():
            pytest.fail(f"{message}; it is a dev dependency (uv sync)")
        pytest.skip(message)
    report = tmp_path / "report.json"
    settings = tmp_path / "schemathesis.toml"
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(settings),
        "--no-color",
        "run",
        str(ROOT / "openapi.yaml"),
        "--checks",
        ",".join(CHECKS),
        "--header",
        f"Authorization: Bearer {KEY}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--request-timeout",
        str(REQUEST_TIMEOUT_SECONDS),
        "--workers",
        "1",
        "--continue-on-failure",  # every distinct failure of an operation, not just its first
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--output-sanitize",
        "false",
    ]
    with serve_live(api_keys=SecretStr(f"test:{KEY}")) as live:
        settings.write_text(config(await seed(live.url, fake)))
        with anyio.fail_after(TOOL_LIMIT_SECONDS):
            result = await anyio.run_process(
                [*command, "--url", live.url], cwd=tmp_path, check=False
            )
    output = result.stdout.decode() + result.stderr.decode()
    assert report.exists(), output
    summary: Any = json.loads(report.read_text())
    # What schemathesis found, each with its request (as curl) and the answer.
    found = output[output.find("=== FAILURES") :] if "=== FAILURES" in output else output

    operations = summary["operations"]
    assert operations["total"] == len(documented_operations()), output
    assert operations["tested"] == operations["total"], output
    assert (operations["errored"], operations["skipped"]) == (0, 0), output
    assert (summary["stop_reason"], summary["complete"]) == ("completed", True), output
    assert summary["errors"] == [], found
    assert summary["failures"] == [], found
    assert summary["test_cases"]["with_failures"] == 0, found
    assert result.returncode == 0, output
