"""Structured logs: one JSON line per event (or readable lines on a terminal)."""

from __future__ import annotations

import logging
import sys

import structlog

ABANDONED_RESPONSE = "ASGI callable returned without completing response."


def drop_abandoned_stream_line(record: logging.LogRecord) -> bool:
    """uvicorn reports, as an error, a response the app stopped sending. The app does that only
    to an event stream whose client stopped reading, which it logs itself as `stream.dropped`
    (ASGI has no way to say "close this connection" instead)."""
    return record.getMessage() != ABANDONED_RESPONSE


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info if fmt == "json" else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries that log through the standard library (uvicorn, alembic) go through the same
    # renderer, one line per event.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "alembic"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.error").addFilter(drop_abandoned_stream_line)
    logging.getLogger("uvicorn.access").disabled = True  # the app logs each request itself
    for chatty in ("httpx", "httpx2", "openai"):  # a line per model request is the engine's job
        logging.getLogger(chatty).setLevel(logging.WARNING)
