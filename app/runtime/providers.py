"""Model providers built from settings: the default one and each `MODEL_PROVIDERS` entry."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from app.engine import AnthropicProvider, ModelError, ModelProvider, ModelRequest, OpenAIProvider
from app.engine.model import ModelResponse, TextSink
from app.examples.demo_model import DemoModel
from app.settings import ProviderSettings, Settings

DEMO = "the demo model (in process; no model is configured)"


def default_provider_settings(settings: Settings) -> ProviderSettings:
    """`OPENAI_BASE_URL` and `OPENAI_API_KEY`, as an entry of `MODEL_PROVIDERS` would say them."""
    return ProviderSettings(base_url=settings.openai_base_url, api_key=settings.openai_api_key)


def build_provider(entry: ProviderSettings, settings: Settings) -> ModelProvider:
    key = entry.api_key.get_secret_value() if entry.api_key else None
    if entry.kind == "anthropic":
        return AnthropicProvider(
            api_key=key,
            base_url=entry.base_url,
            headers=entry.headers,
            query=entry.query,
            body=entry.body,
            max_retries=settings.model_max_retries,
            timeout_seconds=settings.model_timeout_seconds,
            structured_output=entry.structured_output or "tool",
        )
    return OpenAIProvider(
        base_url=entry.base_url,
        api_key=key,
        api_key_header=entry.api_key_header,
        headers=entry.headers,
        query=entry.query,
        body=entry.body,
        omit=entry.omitted,
        max_retries=settings.model_max_retries,
        timeout_seconds=settings.model_timeout_seconds,
        structured_output=entry.structured_output or "response_format",
    )


class MissingKey(ModelProvider):
    """A provider that would call a hosted API without a key: each call fails saying which
    setting to set, where the API would answer 401 (or, offline, a bare connection error)."""

    def __init__(self, message: str) -> None:
        self.message = message

    async def complete(
        self, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelResponse:
        raise ModelError(f"model {request.model!r}: {self.message}")


NO_KEY = (
    "OPENAI_API_KEY is not set, so OpenAI's API cannot be called: set OPENAI_API_KEY, or "
    "OPENAI_BASE_URL to an OpenAI-compatible server (see the README's Model servers)"
)


def uses_demo_model(settings: Settings, bundled_agents: bool) -> bool:
    """The bundled agents with no model setting at all: a first run, played on the demo model."""
    configured = settings.openai_api_key or settings.openai_base_url or settings.model_providers
    return bundled_agents and not configured


def build_providers(
    settings: Settings, *, demo: bool = False
) -> tuple[ModelProvider, dict[str, ModelProvider]]:
    """The default provider and the named ones; `demo` (the bundled agents are served) puts the
    demo model in place of a default provider nobody configured."""
    default: ModelProvider
    if uses_demo_model(settings, demo):
        default = DemoModel()
    elif not (settings.openai_api_key or settings.openai_base_url):
        default = MissingKey(NO_KEY)
    else:
        default = build_provider(default_provider_settings(settings), settings)
    named = {
        name: _keyless(name, entry) or build_provider(entry, settings)
        for name, entry in settings.model_providers.items()
    }
    return default, named


def _keyless(name: str, entry: ProviderSettings) -> MissingKey | None:
    """An entry aimed at OpenAI's own API with no key (a local server may need none; the
    `anthropic` SDK says itself that it found no key, ANTHROPIC_API_KEY included)."""
    if entry.kind != "openai" or entry.api_key or entry.base_url or entry.headers:
        return None
    return MissingKey(
        f"the MODEL_PROVIDERS entry {name!r} has no api_key, so OpenAI's API cannot be called: "
        "set its api_key, or its base_url to a server that needs none"
    )


def endpoints(settings: Settings, *, demo: bool) -> list[tuple[str, str, bool]]:
    """Each provider as people read it: its name, where its requests go, whether a key is set."""
    if uses_demo_model(settings, demo):
        return [("default", DEMO, False)]
    found = [("default", describe(settings, None), settings.openai_api_key is not None)]
    for name, entry in settings.model_providers.items():
        found.append((name, describe(settings, f"{name}/"), entry.api_key is not None))
    return found


def describe(settings: Settings, model: str | None) -> str:
    """Where a model's requests go, for people: the provider's name and base URL, no key."""
    prefix, slash, _ = (model or settings.default_model).partition("/")
    entry = settings.model_providers.get(prefix) if slash else None
    if entry is None:
        return _without_userinfo(settings.openai_base_url) or "OpenAI's API"
    where = _without_userinfo(entry.base_url) or (
        "Anthropic's API" if entry.kind == "anthropic" else "OpenAI's API"
    )
    return f"{where} (provider {prefix!r}, {entry.kind})"


def _without_userinfo(url: str | None) -> str | None:
    """The URL without a `user:password@` (a gateway's basic auth) that printing would leak."""
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))
