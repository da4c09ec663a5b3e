"""The README's "Your own agents": its agents file, found in the working directory or by path,
served with its approval handler deciding the calls that need approval."""

from __future__ import annotations

from pathlib import Path

from app.runtime.agents import load_agents_module
from app.testing import FakeModel, FakeModelServer, call, text
from tests.conftest import ROOT
from tests.test_cli import env, serve_one_run


def readme_agents_file(folder: Path) -> Path:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Your own agents", 1)[1].split("\n## ", 1)[0]
    source = section.split("```python\n", 1)[1].split("```", 1)[0]
    path = folder / "my_agents.py"
    path.write_text(source)
    return path


def test_a_py_path_is_loaded_and_is_not_the_bundled_agents(tmp_path: Path) -> None:
    module = load_agents_module(str(readme_agents_file(tmp_path)))

    assert [agent.name for agent in module.agents] == ["support"]
    assert module.bundled is False


def test_serve_finds_a_module_in_the_working_directory_and_its_handler_decides(
    tmp_path: Path, fake_server: FakeModelServer, fake: FakeModel
) -> None:
    readme_agents_file(tmp_path)
    fake.script("*", [call("refund", {"amount": 250}), text("Refunded.")])
    response, _ = serve_one_run(
        {
            **{k: v for k, v in env().items() if k != "PYTHONPATH"},
            "AGENTS_MODULE": "my_agents",
            "OPENAI_BASE_URL": fake_server.base_url,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'own.db'}",
        },
        {"agent": "support", "input": "refund 250 euros", "context": {"user_id": "u1"}},
        cwd=tmp_path,
    )

    run = response.json()
    assert run["status"] == "completed", run
    assert run["steps"][0]["tool_calls"][0]["output"] == "refunded 250 to u1"
    assert [d["source"] for d in run["decisions"]] == ["handler"]
