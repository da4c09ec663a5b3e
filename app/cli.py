"""`agent-runs serve | worker | migrate | backup | fake-model | check-model | openapi`."""

from __future__ import annotations

import importlib.util
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import anyio
import typer
import uvicorn
from pydantic import ValidationError

from app.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from app.engine.providers.probe import Finding

cli = typer.Typer(
    name="agent-runs",
    help="Run LLM agents as durable REST resources.",
    no_args_is_help=True,
    add_completion=False,
)

EXAMPLE_SCRIPT = Path(__file__).parent / "examples" / "fake_model.json"

# The worker's event loop: uvloop where it is installed, as uvicorn picks it for `serve`.
LOOP_OPTIONS = {"use_uvloop": importlib.util.find_spec("uvloop") is not None}

Host = Annotated[str | None, typer.Option(help="Address to bind [env: HOST; default 127.0.0.1].")]
Port = Annotated[int | None, typer.Option(help="Port to bind [env: PORT; default 8000].")]
Concurrency = Annotated[
    int | None, typer.Option(help="Runs driven at once [env: CONCURRENCY; default 16].")
]
Debug = Annotated[
    bool, typer.Option("--debug", help="Show the traceback of an error that stops the start.")
]


def _settings(**overrides: object) -> Settings:
    from app.logs import configure_logging

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        )
        raise _fail(f"invalid settings: {problems}") from None
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _fail(message: str) -> typer.Exit:
    typer.secho(f"agent-runs: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


@contextmanager
def _refusals(debug: bool) -> Iterator[None]:
    """A start that cannot go on says why in one line; `--debug` shows the traceback too."""
    from app.api.tokens import InvalidAuthSettings
    from app.runtime.startup import StartupError

    try:
        yield
    except typer.Exit:
        raise
    except (StartupError, InvalidAuthSettings) as exc:
        if debug:
            raise
        raise _fail(str(exc)) from None
    except Exception as exc:
        if debug:
            raise
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise _fail(f"{cause} (--debug shows the traceback)") from None


async def _check_database(settings: Settings, *, schema: bool) -> None:
    from app.runtime.startup import check_database, check_schema

    await check_database(settings.database_url)
    if schema:
        await check_schema(settings.database_url)


@cli.command()
def serve(
    host: Host = None,
    port: Port = None,
    concurrency: Concurrency = None,
    executor: Annotated[
        bool, typer.Option(help="Run the embedded executor in this process.")
    ] = True,
    reload: Annotated[
        bool, typer.Option(help="Restart when a .py file under the working directory changes.")
    ] = False,
    debug: Debug = False,
) -> None:
    """The API, with an embedded executor (SQLite: migrated on start).

    With no model settings and the example agents, they play on an embedded demo model.
    """
    from app.api.app import begin_shutdown, create_app
    from app.runtime import banner, startup
    from app.store.database import Database

    settings = _settings(host=host, port=port, concurrency=concurrency)
    with _refusals(debug):
        module = startup.agents(settings)
        startup.database_url(settings.database_url)
        # Say plainly why a second process on one SQLite file cannot start, before uvicorn does.
        probe = Database(settings.database_url)
        try:
            probe.claim_sqlite_file()
        finally:
            probe.release_sqlite_file()
        # Before anything is migrated or driven: a second `serve` on a taken port stops here.
        startup.check_port(settings.host, settings.port)
        anyio.run(partial(_check_database, settings, schema=not probe.is_sqlite))
    banner.show(banner.facts(settings, module, executor=executor))
    if reload:
        _serve_reloading(settings, executor)
        return
    with _refusals(debug):
        app = create_app(settings, agents_module=module, with_executor=executor)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # uvicorn waits for requests in flight before it stops: held `?wait` requests
            # answer now instead of holding the shutdown for up to a minute.
            begin_shutdown(app)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False
    )
    # uvicorn shuts down gracefully on SIGTERM (requests, then our lifespan hands runs back),
    # then raises the signal again for whatever handler was there before it: a clean stop
    # asked for by a process manager exits 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    Server(config).run()


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _serve_reloading(settings: Settings, executor: bool) -> None:
    """uvicorn's reloader: a child process builds the app afresh (`reloading_app`) after each
    change of a .py file under the working directory."""
    import os

    os.environ["AGENT_RUNS_EXECUTOR"] = "true" if executor else "false"
    uvicorn.run(
        "app.cli:reloading_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        reload=True,
        reload_dirs=[str(Path.cwd())],
        log_config=None,
        access_log=False,
    )


def reloading_app() -> FastAPI:
    """The app of `serve --reload`'s child process: settings and agents read anew each time."""
    import os

    from app.api.app import create_app
    from app.runtime import startup

    settings = _settings()
    executor = os.environ.get("AGENT_RUNS_EXECUTOR", "true") == "true"
    # uvicorn builds it in its running event loop: the MCP servers are checked as they connect.
    module = startup.agents(settings, connect=False)
    return create_app(settings, agents_module=module, with_executor=executor)


@cli.command()
def worker(concurrency: Concurrency = None, debug: Debug = False) -> None:
    """Only the executor: takes queued runs from PostgreSQL until SIGTERM or SIGINT."""
    from app.runtime import startup
    from app.runtime.worker import run_worker

    settings = _settings(concurrency=concurrency)
    with _refusals(debug):
        url = startup.database_url(settings.database_url)
        if url.get_backend_name() == "sqlite":
            raise startup.StartupError(
                "DATABASE_URL: `worker` needs PostgreSQL: SQLite serves one process, and "
                "`agent-runs serve` already runs the executor. Set DATABASE_URL=postgresql://..."
            )
        module = startup.agents(settings)
        anyio.run(partial(_check_database, settings, schema=True))
        anyio.run(
            run_worker,
            settings,
            (signal.SIGTERM, signal.SIGINT),
            module,
            backend_options=LOOP_OPTIONS,
        )


@cli.command()
def migrate(debug: Debug = False) -> None:
    """Apply the database migrations (run once before starting PostgreSQL processes)."""
    from app.store.database import Database
    from app.store.migrations import upgrade

    settings = _settings()

    async def apply() -> None:
        await _check_database(settings, schema=False)
        db = Database(settings.database_url)
        try:
            await upgrade(db.engine)
        finally:
            await db.dispose()

    with _refusals(debug):
        anyio.run(apply)
    typer.echo("migrations applied")


@cli.command()
def backup(
    target: Annotated[
        Path, typer.Argument(help="A new file: the copy, itself a database to serve from.")
    ],
) -> None:
    """Copy the SQLite database to TARGET, consistent, while the service runs (SQLite's online
    backup). On PostgreSQL use pg_dump."""
    import sqlite3
    from contextlib import closing

    from sqlalchemy.engine import make_url

    url = make_url(_settings().database_url)
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        raise _fail("backup copies a SQLite file; back up PostgreSQL with pg_dump")
    source = Path(str(url.database))
    if not source.is_file():
        raise _fail(f"there is no database at {source}")
    if target.exists():
        raise _fail(f"{target} exists: give the copy a new file")
    # The backup API copies page by page and starts again when a writer changes a page it
    # copied: the copy is the database as of one moment, whatever the service writes meanwhile.
    with closing(sqlite3.connect(source)) as original, closing(sqlite3.connect(target)) as copy:
        original.backup(copy)
    typer.echo(f"{source} copied to {target}")


@cli.command("fake-model")
def fake_model(
    scripts: Annotated[
        Path,
        typer.Option(help="JSON scripts: model name -> replies; '*' answers any model."),
    ] = EXAMPLE_SCRIPT,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8100,
    dialect: Annotated[
        str,
        typer.Option(help="Stream as this server does: openai, ollama, vllm, gemini, azure..."),
    ] = "openai",
) -> None:
    """A scripted OpenAI-compatible model, to test agents without an API key.

    Point the service at it with OPENAI_BASE_URL=http://HOST:PORT/v1 (or, as Anthropic's
    Messages API, a provider of kind anthropic with base_url http://HOST:PORT).
    """
    from app.testing import DIALECTS, FakeModel, load_scripts

    _settings()
    if dialect not in DIALECTS:
        raise _fail(f"unknown dialect {dialect!r}; one of: {', '.join(sorted(DIALECTS))}")
    fake = FakeModel(load_scripts(scripts), dialect=dialect)
    typer.echo(
        f"fake model on http://{host}:{port}/v1 answering from {scripts} as {dialect} does",
        err=True,
    )
    uvicorn.run(fake.app, host=host, port=port, log_config=None, access_log=False)


@cli.command("check-model")
def check_model(
    model: Annotated[
        str | None,
        typer.Argument(
            help="provider/model, or a model of the default provider [default: DEFAULT_MODEL]."
        ),
    ] = None,
) -> None:
    """Try a configured model: text, a tool call and its answer, parallel calls, usage, JSON.

    Exits 1 when a text answer, a tool call or its round trip fails: agents need those.
    """
    from app.engine import ModelError, ModelRouter
    from app.engine.providers.probe import ESSENTIAL, probe
    from app.runtime.providers import build_providers, describe

    settings = _settings()
    try:
        default, named = build_providers(settings)
    except ImportError as exc:  # an `anthropic` entry without the `anthropic` extra
        raise _fail(str(exc)) from exc
    router = ModelRouter(default, named, default_model=settings.default_model)
    try:
        provider, bare = router.resolve(model)
    except ModelError as exc:
        raise _fail(str(exc)) from exc

    async def check() -> list[Finding]:
        try:
            return await probe(provider, bare)
        finally:
            await router.aclose()

    typer.echo(f"{model or settings.default_model} at {describe(settings, model)}")
    findings = anyio.run(check)
    for finding in findings:
        typer.echo(f"  {'yes' if finding.works else 'no':<4}{finding.name:<19}{finding.detail}")
    if not all(f.works for f in findings if f.name in ESSENTIAL):
        raise typer.Exit(code=1)


@cli.command()
def openapi(
    output: Annotated[
        Path | None, typer.Option(help="Write here (openapi.yaml) instead of stdout.")
    ] = None,
) -> None:
    """Print the OpenAPI document (regenerate the committed one with --output openapi.yaml)."""
    from app.api.app import create_app
    from app.api.openapi import openapi_yaml

    document = openapi_yaml(create_app(Settings(_env_file=None)))
    if output is None:
        typer.echo(document, nl=False)
    else:
        output.write_text(document)


def main() -> None:
    cli()
