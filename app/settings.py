"""Settings from the environment and `.env`, named as in the contract. Read only at the edges."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.engine.mcp import MCPApproval, MCPServer
from app.engine.output import StructuredOutput
from app.engine.providers.chat_request import OptionalField
from app.engine.state import RunStatus
from app.engine.tools import ToolEffect
from app.store.status import ENDED

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./agent-runs.db"

_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# Retention is for ended runs: the store's own group, in the statuses' order.
RETAINED_STATUSES = tuple(status.value for status in RunStatus if status in ENDED)


def parse_duration(value: object) -> timedelta:
    """`45s`, `90m`, `12h`, `30d`: the contract's ages, a whole number of one unit, above 0."""
    if isinstance(value, timedelta):
        return value
    found = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if found is None or int(found[1]) == 0:
        raise ValueError(
            f"{value!r} is not a duration: a whole number above 0 and s, m, h or d "
            "(45s, 90m, 12h, 30d)"
        )
    return timedelta(**{_UNITS[found[2]]: int(found[1])})


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class ProviderSettings(BaseModel):
    """One entry of `MODEL_PROVIDERS`: an OpenAI-compatible server, or Anthropic's API."""

    kind: Literal["openai", "anthropic"] = Field(
        "openai", description="`anthropic`: Anthropic's Messages API (the `anthropic` extra)"
    )
    base_url: str | None = Field(None, description="default: OpenAI's, or Anthropic's")
    api_key: SecretStr | None = None
    api_key_header: str | None = Field(
        None, description="send the key in this header instead of `Authorization: Bearer`"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="sent with every request")
    query: dict[str, str] = Field(
        default_factory=dict, description="added to every URL (Azure: `api-version`)"
    )
    body: dict[str, Any] = Field(
        default_factory=dict,
        description="fields added to every request body (`reasoning_effort`, `thinking`...)",
    )
    options: dict[OptionalField, bool] = Field(
        default_factory=dict,
        description="`false` leaves that optional request field out (the server refuses it)",
    )
    structured_output: StructuredOutput | None = Field(
        None,
        description="how a structured final answer is asked: `response_format` (default for "
        "OpenAI-compatible servers) or `tool`, a `final_output` tool (default for Anthropic)",
    )

    @property
    def omitted(self) -> set[str]:
        return {name for name, send in self.options.items() if not send}

    @model_validator(mode="after")
    def _openai_only(self) -> ProviderSettings:
        if self.kind == "anthropic" and (self.options or self.api_key_header):
            raise ValueError("`options` and `api_key_header` are for OpenAI-compatible servers")
        return self


class MCPServerSettings(BaseModel):
    """One entry of `MCP_SERVERS`: a streamable HTTP server (`url`) or a stdio one (`command`)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, description="streamable HTTP endpoint")
    headers: dict[str, str] = Field(default_factory=dict, description="sent with every request")
    command: str | None = Field(None, description="stdio: the program to start")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = Field(None, description="stdio: added to a minimal environment")
    tools: list[str] | None = Field(None, description="the tools to offer (default: all)")
    prefix: str = Field("", description="put before each tool's name")
    approval: MCPApproval = Field(
        "destructive",
        description="which calls a person approves: `destructive` (tools not read-only and not "
        "`destructiveHint: false`), `always` or `never`",
    )
    effects: dict[str, ToolEffect] = Field(
        default_factory=dict, description="tool -> effect, over its annotations"
    )
    run_headers: dict[str, str] = Field(
        default_factory=dict,
        description="HTTP: header -> template of the run's identity, e.g. "
        '`"Bearer {variables.token}"`, `"{principal.name}"`, `"{principal.claims.sub}"`',
    )
    timeout_seconds: float = Field(60, gt=0, le=3600, description="bound on one call")


class Settings(BaseSettings):
    # A refused value is not printed back: keys, MODEL_PROVIDERS' headers and query, and
    # DATABASE_URL's password would be, in the error's text.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL of the store.")
    openai_api_key: SecretStr | None = Field(None, description="Key of the default provider.")
    openai_base_url: str | None = Field(None, description="Base URL of the default provider.")
    model_providers: dict[str, ProviderSettings] = Field(
        default_factory=dict,
        description='JSON: {"name": {"base_url": ..., "api_key": ..., "headers": {...}, '
        '"query": {...}, "body": {...}, "api_key_header": ..., "options": {...}, '
        '"structured_output": "response_format" | "tool"}}.',
    )
    mcp_servers: dict[str, MCPServerSettings] = Field(
        default_factory=dict,
        description='JSON: {"name": {"url": ..., "headers": {...}} or {"command": ..., "args": '
        '[...], "env": {...}}, with "tools", "prefix", "approval", "effects", "run_headers", '
        '"timeout_seconds"}.',
    )
    default_model: str = Field("gpt-4o-mini", description="Model of agents that name none.")
    agents_module: str = Field(
        "app.examples.agents", description="Module whose `agents` list is registered."
    )
    model_max_retries: int = Field(2, ge=0, le=10, description="Retries of a failed model call.")
    model_timeout_seconds: float = Field(60, gt=0, description="Timeout of one model request.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    concurrency: int = Field(16, ge=1, le=1000, description="Runs one process drives at once.")
    poll_interval_seconds: float = Field(
        1.0, gt=0, le=60, description="How often an idle executor looks for work."
    )
    lease_seconds: float = Field(
        20,
        gt=0,
        le=3600,
        description="How long a run stays with an executor that stopped renewing its lease "
        "(killed, paused, cut off) before another executor takes it over.",
    )
    heartbeat_seconds: float = Field(
        5, gt=0, le=600, description="How often an executor renews the leases of its runs."
    )
    max_takeovers: int = Field(
        3,
        ge=0,
        le=100,
        description="Takeovers after lost executors before a run fails with `internal_error` "
        "(a run that keeps killing its executor).",
    )
    tenant_max_active_runs: int | None = Field(
        None,
        ge=1,
        description="A tenant's queued and running runs at most; a POST /runs beyond is refused "
        "with 429 `too-many-runs` (default: no limit).",
    )
    database_pool_size: int = Field(
        10,
        ge=1,
        le=200,
        description="PostgreSQL connections per process (transactions beyond wait their turn).",
    )
    shutdown_grace_seconds: float = Field(
        10, ge=0, le=600, description="How long a stopping process lets turns in flight finish."
    )
    watch_poll_seconds: float = Field(
        0.05,
        gt=0,
        le=10,
        description="How often an API process looks for changes other processes made to the "
        "runs its clients watch (one query for all of them; PostgreSQL only).",
    )
    sse_ping_seconds: float = Field(15, gt=0, le=300, description="Keep-alive on event streams.")
    sse_send_timeout_seconds: float = Field(
        30, gt=0, le=600, description="A client that reads nothing for this long is dropped."
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="`worker` only: serve its Prometheus metrics on this port (at HOST); API "
        "processes serve theirs at GET /metrics.",
    )
    api_keys: SecretStr | None = Field(
        None,
        description="Comma-separated `tenant/name:key` or `name:key` (tenant `default`), or bare "
        "keys: every route but the health checks then needs `Authorization: Bearer <key>`.",
    )
    approver_api_keys: SecretStr | None = Field(
        None,
        description="Comma-separated `tenant/name:key` or `name:key`: keys with the role "
        "`approver`; once any approver or admin is configured, only they decide approvals.",
    )
    admin_api_keys: SecretStr | None = Field(
        None,
        description="Comma-separated `tenant/name:key` or `name:key`: keys with the role "
        "`admin` (every tenant).",
    )
    jwt_jwks_url: str | None = Field(
        None,
        description="Verify bearer tokens that are not API keys as JWTs signed by a key of this "
        "JWKS (an OIDC provider's `jwks_uri`).",
    )
    jwt_public_key: SecretStr | None = Field(
        None, description="Verify bearer tokens as JWTs signed by this PEM public key."
    )
    jwt_secret: SecretStr | None = Field(
        None, description="Verify bearer tokens as HS256 JWTs signed with this secret."
    )
    jwt_issuer: str | None = Field(None, description="Tokens must carry this `iss`.")
    jwt_audience: str | None = Field(None, description="Tokens must carry this `aud`.")
    jwt_tenant_claim: str = Field(
        "tenant",
        min_length=1,
        description="The claim naming the caller's tenant (absent: `default`); `a.b` reads a "
        "nested claim.",
    )
    jwt_roles_claim: str = Field(
        "roles",
        min_length=1,
        description="The claim listing the caller's roles; `a.b` reads a nested claim "
        "(`realm_access.roles`).",
    )
    jwt_jwks_cache_seconds: float = Field(
        300,
        gt=0,
        le=86400,
        description="How long a fetched JWKS is used before it is fetched again.",
    )
    jwt_jwks_refresh_seconds: float = Field(
        30,
        ge=0,
        le=3600,
        description="A token signed by a key the JWKS lacks fetches it again (a rotated key), "
        "at most once in this many seconds.",
    )
    jwt_jwks_timeout_seconds: float = Field(
        5, gt=0, le=60, description="Fetching the JWKS fails after this long (503)."
    )
    max_request_bytes: int = Field(
        1024 * 1024, ge=1024, le=1024**3, description="Larger request bodies get 413."
    )
    max_streams_per_client: int = Field(
        100,
        ge=1,
        le=100_000,
        description="Event streams one client (an API key; an address on an open service) may "
        "hold open at once; one more gets 429.",
    )
    request_body_timeout_seconds: float = Field(
        30,
        gt=0,
        le=3600,
        description="A request body not received whole this long after the request began is "
        "answered 408 and its connection closed.",
    )
    max_tool_output_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=64 * 1024**2,
        description="A tool's output is cut at this many bytes (UTF-8), ending with a marker "
        "that says how much was cut: the model gets it on every later turn.",
    )
    run_retention: Annotated[dict[str, timedelta], NoDecode] = Field(
        default_factory=dict,
        description='JSON: ended status -> age, `{"completed": "30d", "failed": "90d"}`; runs '
        "ended longer ago are deleted with everything of them (absent: kept forever).",
    )
    session_retention: Duration | None = Field(
        None,
        description="A session whose last run ended longer ago, with no unfinished run, is "
        "deleted (default: kept forever).",
    )
    idempotency_key_ttl: Duration = Field(
        timedelta(hours=24),
        description="An older Idempotency-Key is forgotten: a repeat then creates a new run.",
    )
    retention_interval_seconds: float = Field(
        30,
        gt=0,
        le=3600,
        description="How often an executor looks for rows past their retention (one process "
        "deletes at a time).",
    )
    retention_batch_size: int = Field(
        500,
        ge=1,
        le=100_000,
        description="The most rows of one kind deleted per transaction (fewer when rows weigh "
        "more: each transaction is kept near a tenth of a second).",
    )
    webhook_allowed_hosts: str = Field(
        "",
        description="Comma-separated hosts webhooks may call (`hooks.example.com`, "
        "`*.example.com`, or an IP address, which also allows a private one); empty: runs "
        "with a webhook are refused.",
    )
    webhook_secret: SecretStr | None = Field(
        None, description="Signs webhook bodies (HMAC-SHA256); needed with allowed hosts."
    )
    webhook_max_attempts: int = Field(
        8, ge=1, le=50, description="Tries of one webhook delivery before it is given up."
    )
    webhook_retry_seconds: float = Field(
        2, gt=0, le=3600, description="Wait before the first retry; it doubles each time."
    )
    webhook_timeout_seconds: float = Field(
        10, gt=0, le=30, description="Timeout of one webhook request, all of it."
    )
    tracing: bool = Field(
        False,
        description="Export OpenTelemetry spans of runs, turns, model and tool calls over OTLP "
        "(OTEL_EXPORTER_OTLP_ENDPOINT ...; needs agent-runs[tracing]).",
    )
    console: bool = Field(
        True, description="Serve the built-in web console at /console (approvals, live runs)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    @field_validator("mcp_servers")
    @classmethod
    def _mcp_servers(cls, value: dict[str, MCPServerSettings]) -> dict[str, MCPServerSettings]:
        # The server checks its own name, transport and headers: built here (not connected),
        # a wrong entry is refused as the setting it is.
        for name, entry in value.items():
            MCPServer(name, **entry.model_dump())
        return value

    @field_validator("run_retention", mode="before")
    @classmethod
    def _run_retention(cls, value: object) -> dict[str, timedelta]:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f'not JSON ({exc.msg}); write {{"completed": "30d"}}') from None
        if not isinstance(value, dict):
            raise ValueError('a JSON object of status -> age is needed: {"completed": "30d"}')
        unknown = [status for status in value if status not in RETAINED_STATUSES]
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is not an ended status; retention is for "
                f"{', '.join(RETAINED_STATUSES)}"
            )
        return {status: parse_duration(age) for status, age in value.items()}

    @model_validator(mode="after")
    def _webhooks_signed(self) -> Settings:
        if self.webhook_allowed_hosts.strip() and self.webhook_secret is None:
            raise ValueError("WEBHOOK_ALLOWED_HOSTS needs WEBHOOK_SECRET: every delivery is signed")
        return self

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Settings:
        # A lease renewed less often than it expires is lost by a healthy executor.
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                f"HEARTBEAT_SECONDS ({self.heartbeat_seconds}) must be shorter than "
                f"LEASE_SECONDS ({self.lease_seconds}); a third of it or less is sound"
            )
        return self
