"""Any OpenAI-compatible Chat Completions server, through the `openai` SDK's async client."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

import openai
import structlog

from app.engine.errors import ModelError
from app.engine.model import ModelProvider, ModelRequest, ModelResponse, TextSink
from app.engine.output import StructuredOutput
from app.engine.providers.assembly import Assembler
from app.engine.providers.chat_request import refused_field, request_body
from app.engine.providers.failures import model_error, server_message

log = structlog.get_logger("app.engine")


class OpenAIProvider(ModelProvider):
    """Streams every call (usage included) and relies on the SDK's own retries and timeout.

    `headers` and `query` go with every request (Azure's classic API wants `api-version` in the
    query), and `body`'s fields in every request body (`reasoning_effort`, DeepSeek's
    `thinking`); `api_key_header` sends the key in that header instead of `Authorization: Bearer`
    (Azure's `api-key`); `omit` names optional fields the server refuses (`stream_options`,
    `parallel_tool_calls`, `temperature`, `max_tokens`, `response_format`). A 400 that names
    `stream_options`, `parallel_tool_calls`, `response_format` or a field sent back on messages
    (Groq refuses the `reasoning` it streamed) is asked once more without it (once per field);
    when that answer comes, the field is left out of that model's requests from then on. Per
    model, because a refusal can be the model's (o-series models refuse `parallel_tool_calls`,
    gpt-4o on the same server takes it); and only after an answer, because a 400 about
    something else may quote the request and name a field it did not refuse.
    `structured_output="tool"` asks for a structured final answer as a `final_output` tool
    call instead of with `response_format`.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_header: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        omit: Collection[str] = (),
        max_retries: int = 2,
        timeout_seconds: float = 60.0,
        structured_output: StructuredOutput = "response_format",
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        self.structured_output = structured_output
        default_headers = dict(headers or {})
        # The SDK omits a header only when a request says so: the key goes in its own header.
        self._options: openai.RequestOptions = {}
        if api_key_header:
            default_headers[api_key_header] = api_key or ""
            self._options = {"headers": {"Authorization": openai.Omit()}}
        # A local OpenAI-compatible server often needs no key, but the SDK insists on one.
        self._client = client or openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "unused",
            default_headers=default_headers,
            default_query=dict(query or {}),
            max_retries=max_retries,
            timeout=timeout_seconds,
        )
        self._omit = frozenset(omit)
        # Model -> the optional fields its server refused. Only ever replaced whole, so tasks
        # reading it concurrently see one value or the other.
        self._refused: dict[str, frozenset[str]] = {}
        self._body = dict(body or {})

    async def complete(
        self, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelResponse:
        refused = self._refused.get(request.model, frozenset())
        try:
            response, dropped = await self._call_without_refused(
                request, self._omit | refused, on_text
            )
        except openai.APIStatusError as exc:
            raise model_error(request.model, exc.status_code, exc.body, exc.message) from exc
        except openai.APIError as exc:  # no connection, a timeout, or an error inside the stream
            raise model_error(request.model, None, exc.body, exc.message) from exc
        except json.JSONDecodeError as exc:
            raise ModelError(
                f"model {request.model!r}: the server sent invalid JSON: {exc}"
            ) from exc
        if dropped:
            self._refused[request.model] = refused | dropped
        return response

    def refused(self, model: str) -> frozenset[str]:
        """The optional fields left out of `model`'s requests: by `omit`, or refused so far."""
        return self._omit | self._refused.get(model, frozenset())

    async def _call_without_refused(
        self, request: ModelRequest, omit: frozenset[str], on_text: TextSink | None
    ) -> tuple[ModelResponse, frozenset[str]]:
        """The answer, asked again without each field a 400 refuses; those fields."""
        dropped: frozenset[str] = frozenset()
        while True:  # each pass leaves one more field out: at most one per field there is
            body = {**self._body, **request_body(request, omit | dropped)}
            try:
                return await self._call(request.model, body, on_text), dropped
            except openai.APIStatusError as exc:
                text = server_message(exc.body)
                field = refused_field(exc.status_code, text, request, body, omit | dropped)
                if field is None:
                    raise
                log.warning("model.field_refused", model=request.model, field=field)
                dropped |= {field}

    async def _call(
        self, model: str, body: dict[str, Any], on_text: TextSink | None
    ) -> ModelResponse:
        # `post` sends the body as it is and yields each chunk as parsed JSON, with the SDK's
        # retries, timeout and errors. `chat.completions.create` would first walk the whole
        # request against the SDK's type hints and build a model of every chunk: on a short turn
        # that costs more than everything else the engine does.
        stream = await self._client.post(
            "/chat/completions",
            body=body,
            options=self._options,
            cast_to=object,
            stream=True,
            stream_cls=openai.AsyncStream[object],
        )
        assembler = Assembler(model)
        async with stream:
            if "json" in stream.response.headers.get("content-type", ""):
                # SGLang with tools answers a whole completion to `stream: true`; a gateway may
                # answer its error so, with status 200.
                completion = json.loads(await stream.response.aread())
                if isinstance(completion, dict) and "choices" not in completion:
                    raise model_error(model, None, completion, "the server sent no answer")
                text = assembler.add_completion(completion)
                if text and on_text is not None:
                    await on_text(text)
            else:
                async for chunk in stream:
                    text = assembler.add_chunk(chunk)
                    if text and on_text is not None:
                        await on_text(text)
        return assembler.response()

    async def aclose(self) -> None:
        await self._client.close()
