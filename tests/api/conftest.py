"""The service under test: the app with its lifespan, over an httpx client."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.app import create_app
from app.api.deps import Services
from app.engine.principal import ADMIN, Principal
from app.runtime.agents import load_agents_module
from app.services.callers import Caller
from app.settings import Settings
from app.store.tenancy import EVERY_TENANT
from app.testing import FakeModel, FakeModelServer
from app.testing.server import ThreadedServer
from tests.api import agents as test_agents
from tests.conftest import ROOT, is_postgres


class Client(httpx.AsyncClient):
    """An httpx client talking to the app in-process, with the app at hand for its state."""

    def __init__(self, app: FastAPI) -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        super().__init__(transport=transport, base_url="http://agent-runs")
        self.app = app


class ClientFactory(Protocol):
    def __call__(
        self, *, with_executor: bool = True, **overrides: Any
    ) -> AbstractAsyncContextManager[Client]: ...


@pytest.fixture
def settings(db_url: str, fake_server: FakeModelServer) -> Settings:
    return Settings(
        _env_file=None,
        database_url=db_url,
        openai_base_url=fake_server.base_url,
        default_model="m",
        model_max_retries=1,
        poll_interval_seconds=0.2,
        concurrency=8,
        shutdown_grace_seconds=0.5,
    )


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[Client]:
    """Run the app's lifespan and talk to it in-process. A test that fails inside shuts the app
    down as a passing one does: a failure thrown into the lifespan cancels queries mid-way, and an
    aiosqlite connection closed that way can leave a task that never ends, hanging the suite."""
    failure: Exception | None = None
    async with app.router.lifespan_context(app), Client(app) as client:
        try:
            yield client
        except Exception as exc:
            failure = exc
    if failure is not None:
        raise failure


# Tests look at runs of whichever tenant made them.
ANY_TENANT = Caller(Principal("tests", roles=frozenset({ADMIN})), EVERY_TENANT)


def services_of(client: Client) -> Services:
    services: Services = client.app.state.services
    return services


async def rested(client: Client, run_id: str, seconds: float = 10) -> dict[str, Any]:
    """The run once it rests, awaited through the service's own wake-ups (bounded)."""
    runs = services_of(client).runs
    await runs.wait_until_resting(await runs.get(run_id, ANY_TENANT), seconds)
    run: dict[str, Any] = (await client.get(f"/runs/{run_id}")).json()
    return run


async def requests_arrived(fake: FakeModel, count: int, model: str | None = None) -> None:
    assert await anyio.to_thread.run_sync(fake.wait_for_requests, count, model)


def client_factory(settings: Settings, module_name: str, **fixed: Any) -> ClientFactory:
    """Apps on that agents module, with `fixed` settings and each app's own overrides."""
    module = load_agents_module(module_name)

    def make(
        *, with_executor: bool = True, **overrides: Any
    ) -> AbstractAsyncContextManager[Client]:
        changed = settings.model_copy(update={**fixed, **overrides})
        return serving(create_app(changed, agents_module=module, with_executor=with_executor))

    return make


@pytest.fixture
def make_client(settings: Settings) -> ClientFactory:
    test_agents.reset()
    return client_factory(settings, "tests.api.agents")


class Watchers:
    """How many watchers (event streams, `?wait`s) the service holds, as its wake-up hub
    reports each change: a test in another thread waits for a count."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = threading.Condition()

    def __call__(self, count: int) -> None:
        with self._changed:
            self.count = count
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10) -> bool:
        """Block (a thread) until `count` watchers remain; False after `timeout`."""
        with self._changed:
            return self._changed.wait_for(lambda: self.count == count, timeout)


@dataclass
class Live:
    """The service served by uvicorn on 127.0.0.1 in a thread of its own."""

    url: str
    app: FastAPI
    watchers: Watchers

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services


LiveFactory = Callable[..., AbstractContextManager[Live]]


@pytest.fixture
def serve_live(settings: Settings) -> LiveFactory:
    """The service's factory, with tests/api/agents.py's agents unless `agents_module` names
    another module (as AGENTS_MODULE would)."""
    test_agents.reset()

    @contextmanager
    def serve(*, with_executor: bool = True, **overrides: Any) -> Iterator[Live]:
        watchers = Watchers()
        module = load_agents_module(overrides.get("agents_module", "tests.api.agents"))
        app = create_app(
            settings.model_copy(update=overrides),
            agents_module=module,
            with_executor=with_executor,
            on_watchers=watchers,
        )
        with ThreadedServer(app, lifespan=True) as server:
            yield Live(server.url, app, watchers)

    return serve


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[Client]:
    async with make_client() as client:
        yield client


AGENT_RUNS = str(Path(sys.executable).with_name("agent-runs"))


WorkerFactory = Callable[[], "subprocess.Popen[str]"]


@pytest.fixture
def start_worker(
    db_url: str, fake_server: FakeModelServer, tmp_path: Path
) -> Iterator[WorkerFactory]:
    """Starts `agent-runs worker` processes on the test database; kills what is left after."""
    if not is_postgres(db_url):
        pytest.skip("workers need PostgreSQL; SQLite serves one process")
    processes: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "OPENAI_BASE_URL": fake_server.base_url,
            "AGENTS_MODULE": "tests.api.agents",
            "DEFAULT_MODEL": "m",
            "POLL_INTERVAL_SECONDS": "0.1",
            "PYTHONPATH": str(ROOT),
        }
        log = (tmp_path / f"worker-{len(processes)}.log").open("w")
        process = subprocess.Popen(
            [AGENT_RUNS, "worker", "--concurrency", "4"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()  # the child holds its own descriptor
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that answers `fail` errors first, then 204s."""

    fail: int = 0
    delay: float = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answered: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        await anyio.sleep(self.delay)
        with self.changed:
            self.answered += 1
            failing = self.answered <= self.fail
            if not failing:
                self.received.append((dict(request.headers), body))
            self.changed.notify_all()
        return Response(status_code=500 if failing else 204)

    def wait_for(self, count: int, timeout: float = 10) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.received) >= count, timeout)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])
    with ThreadedServer(app) as server:
        receiver.url = f"{server.url}/hook"
        yield receiver
