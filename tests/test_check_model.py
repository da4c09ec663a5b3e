"""`agent-runs check-model`: one small round trip of each kind, and an exit code to act on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli import EXAMPLE_SCRIPT
from app.runtime.providers import describe
from app.settings import Settings
from app.testing import Dialect, FakeModel, FakeModelServer, Rule, Script, call, load_scripts, text
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


def test_the_base_url_is_shown_without_its_credentials() -> None:
    settings = Settings(
        model_providers={"gw": {"base_url": "https://user:s3cret@gw.example/v1", "api_key": "k"}}
    )

    assert describe(settings, "gw/m") == "https://***@gw.example/v1 (provider 'gw', openai)"
    assert "s3cret" not in describe(
        settings.model_copy(update={"openai_base_url": "http://a:s3cret@h"}), "m"
    )


def test_an_anthropic_entry_without_the_extra_says_what_to_install(tmp_path: Path) -> None:
    # A package that shadows the SDK as if the extra were not installed.
    (tmp_path / "anthropic").mkdir()
    (tmp_path / "anthropic" / "__init__.py").write_text("raise ImportError('no anthropic')\n")
    providers = json.dumps({"anthropic": {"kind": "anthropic"}})

    result = agent_runs(
        "check-model", "anthropic/claude-x", MODEL_PROVIDERS=providers, PYTHONPATH=str(tmp_path)
    )

    assert result.returncode == 2, result.stderr
    assert "agent-runs[anthropic]" in result.stderr


def structured_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line[6:25].strip() == "structured output")


def test_a_server_that_refuses_response_format_is_told_to_use_the_tool() -> None:
    fake = FakeModel(
        load_scripts(EXAMPLE_SCRIPT), dialect=Dialect("x", refuses=("response_format",))
    )
    with FakeModelServer(fake) as server:
        providers = json.dumps({"local": {"base_url": server.base_url}})
        result = agent_runs("check-model", "local/llama3.2", MODEL_PROVIDERS=providers)

    assert result.returncode == 0, result.stdout + result.stderr  # not essential
    line = structured_line(result.stdout)
    assert line.startswith("  no  ")
    assert '"structured_output": "tool"' in line


def test_an_entry_asking_by_tool_is_checked_by_tool() -> None:
    script = Script(
        rules=[
            Rule(match="JSON", replies=[call("final_output", {"sum": 5})]),
            Rule(replies=[text("Hi.")]),
        ]
    )
    fake = FakeModel({"m": script})
    with FakeModelServer(fake) as server:
        providers = json.dumps({"t": {"base_url": server.base_url, "structured_output": "tool"}})
        result = agent_runs("check-model", "t/m", MODEL_PROVIDERS=providers)

    line = structured_line(result.stdout)
    assert line.startswith("  yes ")
    assert 'final_output({"sum": 5})' in line
    asked = fake.requests[-1]
    assert "response_format" not in asked
    assert asked["tools"][0]["function"]["name"] == "final_output"
