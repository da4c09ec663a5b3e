"""`agent-runs check-model`: one small round trip of each kind, and an exit code to act on."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from app.cli import EXAMPLE_SCRIPT
from app.testing import FakeModel, FakeModelServer, load_scripts, text
from tests.test_cli import agent_runs


@pytest.fixture
def ollama() -> Iterator[FakeModelServer]:
    """The bundled fake model's scripts (which answer the check), as Ollama streams them."""
    with FakeModelServer(FakeModel(load_scripts(EXAMPLE_SCRIPT), dialect="ollama")) as server:
        yield server


def test_a_server_that_does_everything(ollama: FakeModelServer) -> None:
    providers = json.dumps({"local": {"base_url": ollama.base_url}})

    result = agent_runs("check-model", "local/llama3.2", MODEL_PROVIDERS=providers)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"local/llama3.2 at {ollama.base_url} (provider 'local', openai)"
    findings = {line[6:25].strip(): line[2:6].strip() for line in lines[1:]}
    assert findings == dict.fromkeys(
        ["text answer", "tool call", "tool result", "parallel calls", "usage", "structured output"],
        "yes",
    )
    assert "2 calls in one answer" in result.stdout
    assert [body["model"] for body in ollama.fake.requests] == ["llama3.2"] * 5


def test_a_model_that_calls_no_tool_fails_the_check() -> None:
    fake = FakeModel({"*": [text("I would rather not.")]})
    with FakeModelServer(fake) as server:
        result = agent_runs("check-model", "tiny", OPENAI_BASE_URL=server.base_url)

    assert result.returncode == 1
    assert "  no  tool call          no call of add: 'I would rather not.'" in result.stdout


def test_an_unknown_provider_is_named() -> None:
    result = agent_runs("check-model", "nowhere/x", MODEL_PROVIDERS="{}")

    assert result.returncode == 2
    assert "unknown model provider 'nowhere'" in result.stderr
