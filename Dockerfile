# syntax=docker/dockerfile:1
# agent-runs: one image for every process: `serve` (the default), `worker` and `migrate`.
#
#   docker build -t agent-runs .
#   docker run -p 8000:8000 -v agent-runs-data:/data agent-runs          # SQLite in /data
#   docker run -e DATABASE_URL=postgresql://... agent-runs agent-runs worker
#
# The build stage installs the locked dependencies first (a layer that changes only with
# pyproject.toml or uv.lock), then the project; the runtime stage copies the virtualenv and the
# sources, without uv, its cache or the build tools.

ARG PYTHON_VERSION=3.11
# The uv that resolved uv.lock; any uv that reads the lock format works.
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
COPY --from=uv /uv /uvx /bin/
# Compile bytecode at build time (the runtime user cannot write /app); copy from the cache
# mount instead of hard-linking across file systems; use the image's Python, never download one.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app

# 1. Dependencies only, from the lock: cached until pyproject.toml or uv.lock changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    uv sync --frozen --no-dev --extra tracing --extra anthropic --no-install-project

# 2. The project itself. It is installed editable (a .pth naming /app), so the runtime stage keeps
# the sources at /app: `agent-runs migrate` finds migrations/ beside app/ (app/store/migrations.py).
# README.md is the package's readme: the build backend reads it.
COPY pyproject.toml uv.lock README.md alembic.ini ./
COPY migrations ./migrations
COPY app ./app
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra tracing --extra anthropic \
 && python -m compileall -q app migrations

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" agent-runs \
 && useradd --system --uid "${APP_UID}" --gid agent-runs --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin agent-runs \
 && mkdir /data \
 && chown agent-runs:agent-runs /data

WORKDIR /app
# Owned by root, read-only for the service user; only /data is writable.
COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/alembic.ini /app/alembic.ini
COPY --from=build /app/migrations /app/migrations
COPY --from=build /app/app /app/app

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATABASE_URL=sqlite+aiosqlite:////data/agent-runs.db

USER ${APP_UID}:${APP_UID}
EXPOSE 8000

# Readiness of an API process: /readyz answers 200 when the database answers, 503 when not (urlopen
# raises on both 5xx and a refused connection). No curl in the slim image: Python's stdlib does it.
# `worker` and `migrate` serve no HTTP: disable the check for them (docker-compose.yml does).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/readyz', timeout=4)"]

# Python is PID 1 here; `serve` (uvicorn) and `worker` handle SIGTERM themselves and hand their
# runs back before exiting (SHUTDOWN_GRACE_SECONDS): give `docker stop` a longer --time than that.
CMD ["agent-runs", "serve"]
