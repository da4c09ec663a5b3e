"""A client generated from the committed `openapi.yaml` by openapi-python-client, an outside tool,
drives the approval flow against the live service: the document is enough to use the API.

The generator runs from its own locked project (tests/tools/openapi-python-client: it pins typer
below what agent-runs needs, so it cannot be a dev dependency); the generated package is imported
from a temporary directory and needs only httpx, attrs and python-dateutil.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr

from app.testing import FakeModel, call, text
from tests.api import agents as test_agents
from tests.api.conftest import LiveFactory
from tests.conftest import ROOT

TOOL_PROJECT = ROOT / "tests" / "tools" / "openapi-python-client"
PACKAGE = "agent_runs_client"
KEY = "some-key"
GENERATE_LIMIT_SECONDS = 120  # the first run in a fresh checkout also installs the generator
REST_LIMIT_SECONDS = 10

pytestmark = pytest.mark.anyio


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def uv_executable() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        message = "uv is not installed: it runs openapi-python-client from its locked project"
        if in_ci():
            pytest.fail(f"{message}; CI must have it (.ci/run installs it)")
        pytest.skip(message)
    return uv


async def generate(output: Path) -> str:
    """Generate the client package at `output`; the generator must warn of nothing."""
    env = dict(os.environ)
    # The generator has an environment of its own: never the one pytest runs in.
    for name in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"):
        env.pop(name, None)
    command = [
        uv_executable(),
        "run",
        "--frozen",
        "--quiet",
        "--project",
        str(TOOL_PROJECT),
        "openapi-python-client",
        "generate",
        "--path",
        str(ROOT / "openapi.yaml"),
        "--output-path",
        str(output),
        "--meta",
        "none",
        "--fail-on-warning",
    ]
    with anyio.fail_after(GENERATE_LIMIT_SECONDS):
        result = await anyio.run_process(command, env=env, check=False)
    output_text = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output_text  # --fail-on-warning: a warning fails too
    assert "encountered while generating" not in output_text, output_text
    return output_text


class Generated:
    """The generated package's modules, imported by name (they exist only at test time)."""

    def __init__(self, package: str) -> None:
        self.package = package

    def __call__(self, module: str) -> ModuleType:
        return importlib.import_module(f"{self.package}.{module}")


@pytest.fixture
def generated_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / PACKAGE
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


async def fetched(get_run: ModuleType, client: Any, run_id: str) -> Any:
    response = await get_run.asyncio_detailed(run_id, client=client)
    assert response.status_code == 200, response.content
    return response.parsed


async def test_a_generated_client_creates_lists_decides_and_sees_the_run_complete(
    serve_live: LiveFactory, fake: FakeModel, generated_path: Path
) -> None:
    await generate(generated_path)
    module = Generated(PACKAGE)
    client_module, models = module("client"), module("models")
    create_run, get_run = module("api.runs.create_run"), module("api.runs.get_run")
    list_approvals, decide = module("api.approvals.list_approvals"), module("api.approvals.decide")
    run_events = module("api.events.run_events")
    pending, completed = models.RunOutStatus.PENDING_APPROVAL, models.RunOutStatus.COMPLETED
    fake.script("m", [call("delete_record", {"record_id": "r1"}), text("done")])

    with serve_live(api_keys=SecretStr(f"test:{KEY}")) as live:
        async with client_module.AuthenticatedClient(
            base_url=live.url,
            token=KEY,
            raise_on_unexpected_status=True,  # an undocumented status is an error
            timeout=httpx.Timeout(REST_LIMIT_SECONDS),
        ) as client:
            # `wait` answers once the run rests: here, parked for approval.
            created = await create_run.asyncio_detailed(
                client=client,
                body=models.CreateRun(agent="calc", input_="please delete r1"),
                wait=REST_LIMIT_SECONDS,
            )
            assert created.status_code == 201, created.content
            run = created.parsed
            assert isinstance(run, models.RunOut)
            assert created.headers["location"] == f"/runs/{run.id}"

            assert run.status == pending, run.to_dict()
            [asked] = run.pending_approvals
            assert (asked.tool, asked.arguments.to_dict()) == ("delete_record", {"record_id": "r1"})

            listed = await list_approvals.asyncio_detailed(client=client)
            assert listed.status_code == 200, listed.content
            [card] = [item for item in listed.parsed.items if item.run_id == run.id]
            assert (card.call_id, card.tool, card.agent) == (asked.call_id, "delete_record", "calc")
            assert card.status == models.ApprovalOutStatus.PENDING
            assert card.decision is None
            first = card.last_messages[0].to_dict()
            assert first == {"role": "user", "content": "please delete r1"}

            decision = models.DecisionIn(call_id=card.call_id, approved=True)
            decided = await decide.asyncio_detailed(
                run.id, client=client, body=models.Decide(decisions=[decision])
            )
            assert decided.status_code == 200, decided.content
            assert [d.call_id for d in decided.parsed.decisions] == [card.call_id]

            # The event stream of a run ends when the run does (read raw: a generated client
            # cannot stream).
            streamed = await run_events.asyncio_detailed(run.id, client=client)
            assert streamed.status_code == 200, streamed.content
            assert b"event: run.completed" in streamed.content
            run = await fetched(get_run, client, run.id)
            assert run.status == completed, run.to_dict()
            assert run.final_output == "done"
            assert run.pending_approvals == []
            [made] = run.decisions
            assert (made.call_id, made.approved, made.decided_by) == (card.call_id, True, "test")
            assert made.source == models.DecisionOutSource.HUMAN
            assert test_agents.calls_seen == [("delete_record", "r1")]

            listed = await list_approvals.asyncio_detailed(client=client)
            assert [item.run_id for item in listed.parsed.items] == []

        async with client_module.AuthenticatedClient(
            base_url=live.url, token="wrong", raise_on_unexpected_status=True
        ) as stranger:
            refused = await get_run.asyncio_detailed(run.id, client=stranger)
            assert refused.status_code == 401
            assert isinstance(refused.parsed, models.Problem)
            assert refused.parsed.type_ == "/problems/unauthorized"
