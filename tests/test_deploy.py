"""The deployment files: docker-compose.yml is valid and has the documented topology, and the
Dockerfile builds a slim, non-root image from the lock, with a readiness check.

No Docker engine is needed: the compose file is checked by `docker-compose config` (which only
reads it) and by its parsed structure, the Dockerfile by its text.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import Settings
from tests.conftest import in_ci

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


# docker-compose.yml


def compose_command() -> list[str] | None:
    """`docker-compose` (v1, Debian's package), else the `docker compose` plugin (v2), else None."""
    if found := shutil.which("docker-compose"):
        return [found]
    if docker := shutil.which("docker"):
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=20, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    return None


def test_compose_file_is_valid_for_docker_compose() -> None:
    command = compose_command()
    if command is None:
        message = "neither docker-compose nor the docker compose plugin is installed"
        if in_ci():
            pytest.fail(f"{message}; CI must validate docker-compose.yml (.ci/run installs it)")
        pytest.skip(message)
    # The file must resolve without any of the variables it reads from the host.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OPENAI_", "POSTGRES_", "AGENT_RUNS_", "API_PORT"))
    }
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves anchors and `<<` merges
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def healthcheck_test(service: dict[str, Any]) -> str:
    test = service.get("healthcheck", {}).get("test", "")
    return test if isinstance(test, str) else " ".join(str(part) for part in test)


def seconds(duration: str | int) -> float:
    """A compose duration (`30s`, `1m30s`, `1500ms`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts, f"not a duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def resolved(value: object) -> str:
    """A compose value with its `${VAR:-default}` interpolations resolved to the defaults."""
    text = re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", str(value))
    return re.sub(r"\$\{\w+\}", "", text)


def app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in services.items()
        if command_of(service)[:1] == ["agent-runs"] and "profiles" not in service
    }


def test_compose_topology(services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert str(postgres["image"]).startswith("postgres:")
    assert "pg_isready" in healthcheck_test(postgres)
    volume = str(postgres["volumes"][0]).split(":")[0]
    assert volume in (compose.get("volumes") or {}), "PostgreSQL data lives in a named volume"

    migrate = services["migrate"]
    assert command_of(migrate) == ["agent-runs", "migrate"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert str(migrate["restart"]) == "no"

    api = services["api"]
    assert command_of(api) == ["agent-runs", "serve", "--no-executor"]
    assert any(str(port).endswith("8000") for port in api["ports"])
    assert "/readyz" in healthcheck_test(api)

    workers = {
        name: service
        for name, service in services.items()
        if command_of(service) == ["agent-runs", "worker"]
    }
    replicas = sum(
        int(service.get("deploy", {}).get("replicas", 1)) for service in workers.values()
    )
    assert replicas == 2, workers

    for name in ["api", *workers]:
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }, name
    # The image's HEALTHCHECK asks /readyz; processes that serve no HTTP must turn it off.
    for name in ["migrate", *workers]:
        assert services[name]["healthcheck"] == {"disable": True}, name


def test_compose_settings(services: dict[str, dict[str, Any]]) -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name, service in app_services(services).items():
        environment = service["environment"]
        assert isinstance(environment, dict), "environment as a mapping"
        assert set(environment) <= known, f"{name}: unknown settings {set(environment) - known}"
        for required in (
            "DATABASE_URL",
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "CONCURRENCY",
            "LEASE_SECONDS",
            "HEARTBEAT_SECONDS",
            "SHUTDOWN_GRACE_SECONDS",
            "DATABASE_POOL_SIZE",
        ):
            assert required in environment, f"{name}: {required}"
        assert resolved(environment["DATABASE_URL"]).startswith("postgresql://")
        assert "@postgres:" in str(environment["DATABASE_URL"])
        # An empty OPENAI_BASE_URL is not "the default": the client gets an empty base URL.
        assert resolved(environment["OPENAI_BASE_URL"]).startswith("http"), name
        # The values, defaults filled in, are settings the service accepts (heartbeat < lease...).
        values: dict[str, Any] = {key.lower(): resolved(v) for key, v in environment.items()}
        settings = Settings(_env_file=None, **values)
        grace = seconds(service["stop_grace_period"])
        assert grace > settings.shutdown_grace_seconds, f"{name}: stop_grace_period too short"


# Dockerfile


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def dockerfile_stages(text: str) -> list[Stage]:
    """The Dockerfile's stages: (INSTRUCTION, arguments) pairs, continued lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages(DOCKERFILE.read_text())


def test_dockerfile_installs_from_the_lock_in_cached_layers(stages: list[Stage]) -> None:
    assert any(stage.base.startswith("ghcr.io/astral-sh/uv:") for stage in stages)
    build = next(stage for stage in stages if any("uv sync" in r for r in stage.args("RUN")))
    runs = [(index, args) for index, (kw, args) in enumerate(build.instructions) if kw == "RUN"]
    syncs = [(index, args) for index, args in runs if "uv sync" in args]
    assert all("--frozen" in args and "--no-dev" in args for _, args in syncs)
    deps_at, deps = syncs[0]
    assert "--no-install-project" in deps
    assert "--mount=type=cache" in deps
    project_at = next(i for i, args in syncs if "--no-install-project" not in args)
    app_copied_at = next(
        i for i, (kw, args) in enumerate(build.instructions) if kw == "COPY" and "app" in args
    )
    assert deps_at < app_copied_at < project_at, "dependencies before the sources, for the cache"


def test_dockerfile_runtime_stage(stages: list[Stage]) -> None:
    final = stages[-1]
    assert final.base.startswith("python:"), final.base
    assert "-slim" in final.base, final.base
    users = final.args("USER")
    assert users, "runs as a non-root user"
    defaults = dict(arg.partition("=")[::2] for arg in final.args("ARG"))
    user = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], users[-1]).split(":")[0]
    assert user.isdigit(), f"a fixed numeric uid (USER {users[-1]})"
    assert int(user) > 0
    assert any("/readyz" in check for check in final.args("HEALTHCHECK"))
    assert final.args("CMD") == ['["agent-runs", "serve"]']
    assert "8000" in final.args("EXPOSE")
    environment = " ".join(final.args("ENV"))
    assert "HOST=0.0.0.0" in environment
    assert "/app/.venv/bin" in environment
    # Neither uv, its cache nor its build stage's leftovers reach the runtime image.
    text = " ".join(args for _, args in final.instructions)
    assert "/root/.cache" not in text
    assert "uv sync" not in text
    assert not any("/uv" in args.split()[0] for args in final.args("COPY") if "--from" in args)


def test_dockerfile_keeps_the_editable_install_paths(stages: list[Stage]) -> None:
    """The project is installed editable (a .pth naming the build's WORKDIR), and the migrations
    are found beside `app/`: the runtime stage must hold both at the very paths of the build."""
    build = next(stage for stage in stages if stage.name == "build")
    workdir = build.args("WORKDIR")[-1]
    copies = {
        tuple(args.split()[1:]) for args in stages[-1].args("COPY") if args.startswith("--from")
    }
    for part in (".venv", "app", "migrations"):
        path = f"{workdir}/{part}"
        assert (path, path) in copies, f"the runtime stage copies {path} to {path}"


def test_dockerfile_copies_only_what_the_context_has() -> None:
    text = DOCKERFILE.read_text()
    sources: set[str] = set(re.findall(r"--mount=type=bind,source=([^,\s]+)", text))
    for stage in dockerfile_stages(text):
        for args in stage.args("COPY"):
            words = args.split()
            if not any(word.startswith("--from") for word in words):
                sources.update(word for word in words[:-1] if not word.startswith("--"))
    assert sources >= {"pyproject.toml", "uv.lock", "app", "migrations", "README.md"}
    ignored = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    for must_ignore in (".venv", ".git", ".env", "*.db"):
        assert must_ignore in ignored
