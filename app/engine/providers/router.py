"""Routes `"model"` to the default provider and `"name/model"` to the provider called `name`."""

from __future__ import annotations

from collections.abc import Mapping

from app.engine.errors import ModelError
from app.engine.model import ModelProvider


class ModelRouter:
    """Picks the provider and the bare model name for an agent's `model`."""

    def __init__(
        self,
        default: ModelProvider,
        providers: Mapping[str, ModelProvider] | None = None,
        *,
        default_model: str | None = None,
    ) -> None:
        self._default = default
        self._providers = dict(providers or {})
        self._default_model = default_model

    def resolve(self, model: str | None) -> tuple[ModelProvider, str]:
        """Raises `ModelError` for an unknown provider or when no model is named anywhere."""
        model = model or self._default_model
        if not model:
            raise ModelError("the agent names no model and no default model is configured")
        prefix, slash, bare = model.partition("/")
        if not slash:
            return self._default, model
        provider = self._providers.get(prefix)
        if provider is None:
            known = ", ".join(sorted(self._providers)) or "none"
            raise ModelError(
                f"unknown model provider {prefix!r} in model {model!r} (configured: {known})"
            )
        return provider, bare

    async def aclose(self) -> None:
        for provider in {id(p): p for p in [self._default, *self._providers.values()]}.values():
            await provider.aclose()
