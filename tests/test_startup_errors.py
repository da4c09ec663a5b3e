"""A wrong setting stops `serve`, `migrate` and `worker` with one line naming it and the cause;
the traceback only with `--debug`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.test_cli import agent_runs

NO_SERVER = "postgresql://nobody@127.0.0.1:1/nothing"  # agents are checked before connecting


def one_line_refusal(result: subprocess.CompletedProcess[str], *words: str) -> str:
    stderr = result.stderr
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("agent-runs: ")]
    assert len(lines) == 1, stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["serve", "migrate", "worker"])
def test_an_unknown_database_scheme(command: str) -> None:
    result = agent_runs(command, DATABASE_URL="mysqlx://u@h/db", PORT=str(free_port()))

    one_line_refusal(result, "DATABASE_URL", "unknown scheme 'mysqlx'")


@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [
        ("API_KEYS", "ui:a,:b", ("API_KEYS", "item 2")),
        ("JWT_SECRET", "short", ("JWT_SECRET", "32 bytes")),
    ],
)
def test_unusable_keys_or_token_settings(
    tmp_path: Path, setting: str, value: str, words: tuple[str, ...]
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = agent_runs("serve", DATABASE_URL=url, PORT=str(free_port()), **{setting: value})

    line = one_line_refusal(result, *words)
    assert value not in line


@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [
        ("RUN_RETENTION", '{"queued": "1d"}', ("RUN_RETENTION", "'queued' is not an ended status")),
        ("RUN_RETENTION", '{"completed": "30 days"}', ("RUN_RETENTION", "not a duration")),
        ("RUN_RETENTION", "30d", ("RUN_RETENTION", "not JSON")),
        ("SESSION_RETENTION", "1w", ("SESSION_RETENTION", "'1w' is not a duration")),
        ("IDEMPOTENCY_KEY_TTL", "0s", ("IDEMPOTENCY_KEY_TTL", "45s, 90m, 12h, 30d")),
    ],
)
def test_retention_that_is_not_an_age_per_ended_status(
    tmp_path: Path, setting: str, value: str, words: tuple[str, ...]
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = agent_runs("serve", DATABASE_URL=url, PORT=str(free_port()), **{setting: value})

    one_line_refusal(result, *words)
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_a_sqlite_file_in_a_missing_folder(command: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'x.db'}"
    result = agent_runs(command, DATABASE_URL=url, PORT=str(free_port()))

    one_line_refusal(result, "DATABASE_URL", "folder", str(tmp_path / "missing"))


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_an_agents_module_that_fails_names_its_file_and_line(command: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken_agents.py"
    broken.write_text("from app import Agent\n\nagents = [Agent(name='a', model=undefined)]\n")
    database = NO_SERVER if command == "worker" else f"sqlite:///{tmp_path / 'x.db'}"
    result = agent_runs(
        command, DATABASE_URL=database, AGENTS_MODULE=str(broken), PORT=str(free_port())
    )

    one_line_refusal(result, "AGENTS_MODULE", "NameError", f"{broken}, line 3")


def test_a_missing_agents_module(tmp_path: Path) -> None:
    result = agent_runs(
        "serve", DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}", AGENTS_MODULE="no_such_agents"
    )

    one_line_refusal(result, "AGENTS_MODULE='no_such_agents'", "No module named")


def test_two_agents_of_one_name(tmp_path: Path) -> None:
    twins = tmp_path / "twins.py"
    twins.write_text("from app import Agent\n\nagents = [Agent(name='a'), Agent(name='a')]\n")
    result = agent_runs(
        "serve", DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}", AGENTS_MODULE=str(twins)
    )

    one_line_refusal(result, "AGENTS_MODULE", "two different agents are named 'a'")


def test_an_mcp_tool_clashing_with_an_agent_s_own_refuses_the_start_naming_both(
    tmp_path: Path,
) -> None:
    module = tmp_path / "clash.py"
    module.write_text(
        "from app import Agent, tool\n\n\n"
        "@tool\ndef lookup(key: str) -> str:\n    return key\n\n\n"
        "agents = [Agent(name='a', tools=[lookup], mcp_servers=['db'])]\n"
    )
    server = {"command": sys.executable, "args": [str(ROOT / "tests/mcp/tools_server.py")]}
    result = agent_runs(
        "serve",
        DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",
        PORT=str(free_port()),
        AGENTS_MODULE=str(module),
        MCP_SERVERS=json.dumps({"db": server}),
    )

    one_line_refusal(
        result, "two tools named 'lookup'", "its own tool", "the tool 'lookup' of MCP server 'db'"
    )


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('{"db": {"args": ["x"]}}', ("MCP_SERVERS", "give a url")),
        ('{"db": {"command": "x", "run_headers": {"A": "{principal.name}"}}}', ("run_headers",)),
        ('{"d b": {"url": "http://127.0.0.1:1/mcp"}}', ("MCP_SERVERS", "not a server name")),
        (
            '{"db": {"url": "http://h/mcp", "approval": "sometimes"}}',
            ("MCP_SERVERS", "APPROVAL", "never"),
        ),
    ],
)
def test_unusable_mcp_servers(tmp_path: Path, value: str, words: tuple[str, ...]) -> None:
    result = agent_runs(
        "serve",
        DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",
        PORT=str(free_port()),
        MCP_SERVERS=value,
    )

    one_line_refusal(result, *words)


def test_an_agent_naming_an_undefined_mcp_server(tmp_path: Path) -> None:
    module = tmp_path / "undefined.py"
    module.write_text("from app import Agent\n\nagents = [Agent(name='a', mcp_servers=['gh'])]\n")
    result = agent_runs(
        "serve", DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}", AGENTS_MODULE=str(module)
    )

    one_line_refusal(result, "uses MCP server 'gh', which is not defined")


def test_a_port_in_use_is_refused_before_anything_is_migrated(tmp_path: Path) -> None:
    database = tmp_path / "x.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = agent_runs("serve", "--port", str(port), DATABASE_URL=f"sqlite:///{database}")

    one_line_refusal(result, "PORT", f"127.0.0.1:{port} is in use")
    assert not database.exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = agent_runs(
        "serve", "--debug", DATABASE_URL=f"sqlite:///{tmp_path / 'missing' / 'x.db'}"
    )

    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "StartupError" in result.stderr


def test_a_missing_postgresql_database(database_url: str) -> None:
    if not database_url.startswith("postgres"):
        pytest.skip("needs PostgreSQL (TEST_DATABASE_URL)")
    missing = database_url.rsplit("/", 1)[0] + "/no_such_database"
    result = agent_runs("migrate", DATABASE_URL=missing)

    one_line_refusal(result, "DATABASE_URL", "cannot connect", "no_such_database")
