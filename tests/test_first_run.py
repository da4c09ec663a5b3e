"""A first run as a new user makes it: `serve` with no model settings in an empty folder, then
the README's walkthrough, command by command, against the embedded demo model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.test_cli import AGENT_RUNS, stop, wait_until_listening

MODEL_SETTINGS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MODEL_PROVIDERS", "AGENTS_MODULE")


def first_run_env() -> dict[str, str]:
    """The test's environment without anything a new user would not have set."""
    dropped = (*MODEL_SETTINGS, "DATABASE_URL", "DEFAULT_MODEL", "API_KEYS", "HOST", "PORT")
    return {k: v for k, v in os.environ.items() if k not in dropped}


def walkthrough(port: int) -> str:
    """The README's walkthrough as one shell script, aimed at the test's port."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A walkthrough with curl", 1)[1].split("\n## ", 1)[0]
    blocks = [block.split("```", 1)[0] for block in section.split("```sh\n")[1:]]
    script = "set -euo pipefail\n" + "\n".join(blocks)
    return script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples use curl")
def test_serve_alone_plays_the_readme_walkthrough_on_the_demo_model(tmp_path: Path) -> None:
    port = free_port()
    banner = tmp_path / "banner.jsonl"
    with banner.open("w") as out:
        process = subprocess.Popen(
            [AGENT_RUNS, "serve", "--port", str(port)],
            cwd=tmp_path,
            env=first_run_env(),
            stdout=out,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    try:
        wait_until_listening(process, port)
        shown = subprocess.run(
            ["bash", "-c", walkthrough(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        stop(process, signal.SIGTERM)

    assert shown.returncode == 0, shown.stderr
    said = json.loads(banner.read_text().splitlines()[0])
    assert said["demo_model"] is True
    assert said["agents"] == ["billing", "librarian", "triage"]
    assert said["models"] == [
        {"provider": "default", "endpoint": said["models"][0]["endpoint"], "key_set": False}
    ]
    assert said["docs"] == f"http://127.0.0.1:{port}/docs"
    assert (tmp_path / "agent-runs.db").exists()  # the default database, in the working directory
    output = shown.stdout
    assert '"final_output":"10 + 20 = 30."' in output
    assert '"final_output":"2 + 3 = 5."' in output  # the session's second run
    assert '"status":"cancelled"' in output  # the slow run
    assert "event: run.completed" in output  # its events, streamed to the end
    assert '"final_output":"Done: record r_99 deleted."' in output
    assert '"final_output":"Done: record r_7 archived by hand."' in output
    assert '"kind":"external"' in output  # the inbox, filtered
    assert '"final_output":"get_weather gave: -3 C, snow."' in output
    assert (
        '"final_output":"I did not refund 250 euros: the call was rejected. '
        'Reason given: over the limit"' in output
    )
    assert '"final_output":{"sum":30,"explanation":"10 + 20 = 30."}' in output
    assert "tripped: the message holds what looks like a card number" in output
    assert '"reason":"the message mentions a lawyer: a person reads it first"' in output
    assert '"call_id":"guardrail_input_lawyers_read_by_a_person","approved":true' in output
    # The librarian's tools, from the example MCP server the service started.
    assert '"name":"find_note","description":"Read the note of that title."' in output
    assert '"effect":"read","needs_approval":"never","external":false,"server":"notes"' in output
    assert '"status":"available"' in output
    assert (
        "find_note gave: The guest network is 'visitors'; its password is on the fridge." in output
    )
    assert '"model_error"' not in output
