"""Anthropic's own Messages API, through the `anthropic` SDK (the `anthropic` extra)."""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from app.engine.errors import ModelError
from app.engine.model import ModelProvider, ModelRequest, ModelResponse, TextSink
from app.engine.output import StructuredOutput
from app.engine.providers.anthropic_messages import chat_response, messages_request
from app.engine.providers.failures import model_error

if TYPE_CHECKING:
    import anthropic

INSTALL_HINT = (
    "AnthropicProvider needs the anthropic SDK: install agent-runs with its `anthropic` extra "
    "(pip install 'agent-runs[anthropic]', or uv sync --extra anthropic)"
)


class AnthropicProvider(ModelProvider):
    """Claude models: tools, parallel tool use, streamed text, usage with the prompt cache.

    Agents name models as `anthropic/<model>` when `MODEL_PROVIDERS` maps `anthropic` to
    `{"kind": "anthropic", "api_key": ...}`. `max_tokens` is the answer's limit for agents that
    set none (the API needs one). `headers` go with every request (`anthropic-beta` for beta
    features), and `body`'s fields in every request body: prompt caching is the user's to ask
    for there (`cache_control`), and `thinking` (its blocks and signatures go back as the API
    requires). A structured final answer is asked as a `final_output` tool call by default:
    every Claude model takes tools, while only some take `output_config`'s JSON schema
    (`structured_output="response_format"` asks that way).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        max_tokens: int = 8192,
        max_retries: int = 2,
        timeout_seconds: float = 60.0,
        structured_output: StructuredOutput = "tool",
        client: anthropic.AsyncAnthropic | None = None,
    ) -> None:
        self.structured_output = structured_output
        self._sdk = _sdk()
        self._client = client or self._sdk.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            default_headers=dict(headers or {}),
            default_query=dict(query or {}),
            max_retries=max_retries,
            timeout=timeout_seconds,
        )
        self._max_tokens = max_tokens
        self._body = dict(body or {})

    async def complete(
        self, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelResponse:
        params = messages_request(request, self._max_tokens)
        try:
            # The SDK takes fields it may not know yet (beta ones) only as `extra_body`.
            async with self._client.messages.stream(**params, extra_body=self._body) as stream:
                async for text in stream.text_stream:
                    if text and on_text is not None:
                        await on_text(text)
                final = await stream.get_final_message()
        except self._sdk.APIStatusError as exc:
            # An error event inside a stream that began with 200 carries that status.
            status = exc.status_code if exc.status_code >= 400 else None
            raise model_error(request.model, status, exc.body, exc.message) from exc
        except self._sdk.APIError as exc:
            raise model_error(request.model, None, exc.body, exc.message) from exc
        except ValueError as exc:  # the SDK could not read a tool call's arguments
            raise ModelError(f"model {request.model!r}: {exc}") from exc
        return chat_response(final.to_dict(), request.model)

    async def aclose(self) -> None:
        await self._client.close()


def _sdk() -> ModuleType:
    try:
        import anthropic
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return anthropic
