"""A TypeScript client generated from the committed `openapi.yaml` drives the approval flow
against the live service, as an approval web app would: openapi-typescript writes the types,
openapi-fetch makes the calls, both unedited, and the script streams the run's events.

`tsc` type-checks the script strictly before it runs (it emits nothing on an error), so a change
of the document that breaks a TypeScript client fails here. The Node project
(tests/tools/ts-client, its versions locked) is copied to a temporary directory once per session
and installed there by `npm ci` from the npm cache when it can: the checkout is never written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import anyio
import pytest
from pydantic import SecretStr

from app.testing import FakeModel, call, text
from tests.api import agents as test_agents
from tests.api.conftest import LiveFactory
from tests.conftest import ROOT, in_ci

PROJECT = ROOT / "tests" / "tools" / "ts-client"
PROJECT_FILES = ["package.json", "package-lock.json", "tsconfig.json", "src"]
KEY = "some-key"
INSTALL_LIMIT_SECONDS = 300  # a cold npm cache downloads every package
CHECK_LIMIT_SECONDS = 120  # generation and tsc on a loaded machine
FLOW_LIMIT_SECONDS = 90  # the script gives up on its own after 60

pytestmark = pytest.mark.anyio


def node_tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node and npm are not installed: they build and run the TypeScript client"
        if in_ci():
            pytest.fail(f"{message}; CI must have them (.ci/run installs them)")
        pytest.skip(message)
    return node, npm


@pytest.fixture(scope="session")
def ts_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Node project, installed from its lock in a directory of its own."""
    _, npm = node_tools()
    project = tmp_path_factory.mktemp("ts-client")
    for name in PROJECT_FILES:
        source = PROJECT / name
        if source.is_dir():
            shutil.copytree(source, project / name)
        else:
            shutil.copy2(source, project / name)
    installed = subprocess.run(
        [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=INSTALL_LIMIT_SECONDS,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return project


async def run_tool(project: Path, command: list[str], limit: float, **env: str) -> str:
    """Run one of the project's tools there; its output, once it succeeded."""
    with anyio.fail_after(limit):
        result = await anyio.run_process(
            command, cwd=project, env={**os.environ, **env}, check=False
        )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    return result.stdout.decode()


def readme_example() -> str:
    """The TypeScript example of the README's Clients section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Clients\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```ts\n", 1)[1].split("```", 1)[0]


async def build(project: Path) -> None:
    """Generate the types from the committed document, then type-check and compile the script,
    and the README's example beside it (it imports the types as `./agent-runs.js`).

    `--default-non-nullable false`: the document's request bodies have fields with defaults
    (`if_busy`, `remember`, the run's `config`), which the generator would otherwise make
    required; response fields the service always sends are `required` in the document itself.
    """
    bin_dir = project / "node_modules" / ".bin"
    generator = [str(bin_dir / "openapi-typescript"), str(ROOT / "openapi.yaml")]
    options = ["--default-non-nullable", "false", "--output", "generated/openapi.d.ts"]
    await run_tool(project, [*generator, *options], CHECK_LIMIT_SECONDS)
    shutil.copy2(project / "generated" / "openapi.d.ts", project / "src" / "agent-runs.d.ts")
    (project / "src" / "readme-example.ts").write_text(readme_example())
    await run_tool(project, [str(bin_dir / "tsc"), "--project", "."], CHECK_LIMIT_SECONDS)


async def test_a_generated_typescript_client_streams_a_run_decides_and_sees_it_complete(
    serve_live: LiveFactory, fake: FakeModel, ts_project: Path
) -> None:
    node, _ = node_tools()
    await build(ts_project)
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("done")])

    with serve_live(api_keys=SecretStr(f"test:{KEY}")) as live:
        output = await run_tool(
            ts_project,
            [node, "build/approval-flow.js"],
            FLOW_LIMIT_SECONDS,
            AGENT_RUNS_URL=live.url,
            AGENT_RUNS_API_KEY=KEY,
            RUN_AGENT="calc",
            RUN_INPUT="please delete r1",
        )

    summary = json.loads(output)
    assert summary["waited_for"] == [{"tool": "delete_record", "arguments": {"record_id": "r1"}}]
    # The first stream stopped at the park; the second resumed after it, missing nothing.
    ids = [event["id"] for event in summary["events"]]
    assert ids == list(range(1, len(ids) + 1))
    events = [event["event"] for event in summary["events"]]
    parked = events.index("run.pending_approval")
    assert events[0] == "run.queued"
    assert "approval.requested" in events[:parked]
    assert events[parked + 1 : parked + 3] == ["approval.decided", "run.queued"]
    assert events[-1] == "run.completed"
    assert (summary["status"], summary["final_output"]) == ("completed", "done")
    assert (summary["model_requests"], summary["max_turns"]) == (2, 30)
    [decision] = summary["decisions"]
    assert (decision["approved"], decision["source"]) == (True, "human")
    assert test_agents.calls_seen == [("delete_record", "r1")]
    assert summary["unauthorized"] == "/problems/unauthorized"
