"""`agent-runs serve | worker | migrate | fake-model | check-model | openapi`."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import anyio
import typer
import uvicorn
from pydantic import ValidationError

from app.settings import Settings

if TYPE_CHECKING:
    from app.engine.providers.probe import Finding

cli = typer.Typer(
    name="agent-runs",
    help="Run LLM agents as durable REST resources.",
    no_args_is_help=True,
    add_completion=False,
)

EXAMPLE_SCRIPT = Path(__file__).parent / "examples" / "fake_model.json"

Host = Annotated[str | None, typer.Option(help="Address to bind [env: HOST; default 127.0.0.1].")]
Port = Annotated[int | None, typer.Option(help="Port to bind [env: PORT; default 8000].")]
Concurrency = Annotated[
    int | None, typer.Option(help="Runs driven at once [env: CONCURRENCY; default 16].")
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


@cli.command()
def serve(
    host: Host = None,
    port: Port = None,
    concurrency: Concurrency = None,
    executor: Annotated[
        bool, typer.Option(help="Run the embedded executor in this process.")
    ] = True,
) -> None:
    """The API, with an embedded executor (SQLite: migrated on start)."""
    from app.api.app import begin_shutdown, create_app
    from app.store.database import Database, DatabaseInUse

    settings = _settings(host=host, port=port, concurrency=concurrency)
    # Say plainly why a second process on one SQLite file cannot start, before uvicorn does.
    probe = Database(settings.database_url)
    try:
        probe.claim_sqlite_file()
    except DatabaseInUse as exc:
        raise _fail(str(exc)) from exc
    finally:
        probe.release_sqlite_file()
    app = create_app(settings, with_executor=executor)

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


@cli.command()
def worker(concurrency: Concurrency = None) -> None:
    """Only the executor: takes queued runs from PostgreSQL until SIGTERM or SIGINT."""
    from app.runtime.worker import run_worker
    from app.store.database import normalize_url

    settings = _settings(concurrency=concurrency)
    if normalize_url(settings.database_url).get_backend_name() == "sqlite":
        raise _fail(
            "`worker` needs PostgreSQL: SQLite serves one process, and `agent-runs serve` "
            "already runs the executor. Set DATABASE_URL=postgresql://..."
        )
    try:
        anyio.run(run_worker, settings, (signal.SIGTERM, signal.SIGINT))
    except Exception as exc:
        raise _fail(str(exc)) from exc


@cli.command()
def migrate() -> None:
    """Apply the database migrations (run once before starting PostgreSQL processes)."""
    from app.store.database import Database
    from app.store.migrations import upgrade

    settings = _settings()

    async def apply() -> None:
        db = Database(settings.database_url)
        try:
            await upgrade(db.engine)
        finally:
            await db.dispose()

    anyio.run(apply)
    typer.echo("migrations applied")


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
