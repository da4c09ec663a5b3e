"""The deployment files: docker-compose.yml is valid and has the documented topology, and the
Dockerfile's image serves: built from the lock, it runs its CMD as a non-root user, migrates,
answers its HEALTHCHECK and serves a run.

No Docker engine is needed: the compose file is checked by `docker-compose config` (which only
reads it) and by its parsed structure; the image's file tree is built by following the
Dockerfile's steps in a directory (tests/image.py) and its processes run on 127.0.0.1. What only
an engine would show (the layers' cache order, the base images) is checked in the Dockerfile's
text.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from alembic.script import ScriptDirectory

from app.settings import Settings
from app.store.migrations import alembic_config
from app.testing import FakeModel, FakeModelServer, text
from tests.conftest import free_port, in_ci
from tests.image import Builder, Image, Stage, ignore_patterns, parse

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


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text()).stages


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
    assert "8000" in final.args("EXPOSE")
    # The container's port is published: it must listen on every interface (tests bind
    # 127.0.0.1 instead, so this is read here).
    assert "HOST=0.0.0.0" in " ".join(final.args("ENV"))


def test_the_build_context_leaves_secrets_and_local_state_out() -> None:
    ignored = ignore_patterns(ROOT / ".dockerignore")
    for must_ignore in (".venv", ".git", ".env", "*.db"):
        assert must_ignore in ignored


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    """The image's file tree, built by following the Dockerfile (a few seconds with uv's cache)."""
    version = parse(DOCKERFILE.read_text()).args["PYTHON_VERSION"]
    python = shutil.which(f"python{version}", path="/usr/local/bin:/usr/bin")
    if python is None or shutil.which("uv") is None:
        message = f"building the image's tree needs python{version} in /usr/bin and uv"
        if in_ci():
            pytest.fail(f"{message}; CI runs the image's processes")
        pytest.skip(message)
    # Not under pytest's own temporary directory (mode 0700): the image's user must reach it.
    base = Path(tempfile.mkdtemp(prefix="agent-runs-image-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield Builder(DOCKERFILE, ROOT, base / "root", python).build()
    finally:
        shutil.rmtree(base)


def test_the_image_runs_as_a_user_that_cannot_write_its_code(image: Image) -> None:
    assert image.uid is not None or os.geteuid() != 0, "the image names a USER"
    if image.uid is not None:
        assert image.uid > 0
        # Owned by root, read-only for the service user; only /data is writable.
        code = image.run(["python", "-c", f"open({image.inside('/app/app/probe')!r}, 'w')"])
        assert code.returncode != 0
        assert "Permission denied" in code.stderr, code.stderr
        data = image.run(["python", "-c", f"open({image.inside('/data/probe')!r}, 'w')"])
        assert data.returncode == 0, data.stderr
    # Neither uv nor its cache reaches the runtime image.
    assert [p for p in image.root.rglob("uv*") if p.name in ("uv", "uvx")] == []
    assert not (image.root / "root").exists()


def answering(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Bounded: until the process answers /healthz (it is another process: no event to await)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the image's CMD exited: {log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the image's CMD did not answer: {log.read_text()[-3000:]}")


def stored_revision(database: Path) -> str:
    with sqlite3.connect(database) as connection:
        [(revision,)] = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return str(revision)


def test_the_image_serves_migrates_and_answers_its_healthcheck(
    image: Image, fake_server: FakeModelServer, fake: FakeModel
) -> None:
    fake.script("m", [text("hello from the image")])
    url_port = free_port()
    # `docker run -p`: the port published, the service on 127.0.0.1 here (HOST, PORT).
    env = {
        "HOST": "127.0.0.1",
        "PORT": str(url_port),
        "OPENAI_BASE_URL": fake_server.base_url,
        "OPENAI_API_KEY": "unused",
        "DEFAULT_MODEL": "m",
    }
    url = f"http://127.0.0.1:{url_port}"
    assert image.run(image.healthcheck, **env).returncode != 0, "nothing serves yet"
    log = image.root.parent / "serve.log"
    process = image.popen(image.cmd, log, **env)
    try:
        answering(process, url, log)
        healthcheck = image.run(image.healthcheck, **env)
        assert healthcheck.returncode == 0, healthcheck.stderr
        assert httpx.get(f"{url}/readyz", timeout=5).json() == {"status": "ready"}
        run = httpx.post(
            f"{url}/runs", params={"wait": 10}, json={"agent": "triage", "input": "hi"}, timeout=20
        ).json()
        assert (run["status"], run["final_output"]) == ("completed", "hello from the image"), run
        # `serve` on SQLite migrated the image's database, in its data volume.
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert stored_revision(Path(image.inside("/data/agent-runs.db"))) == head
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, log.read_text()[-3000:]
    assert image.run(image.healthcheck, **env).returncode != 0, "stopped: the check fails"
