"""Any OpenAI-compatible Chat Completions server, through the `openai` SDK's async client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import openai

from app.engine.errors import ModelError
from app.engine.model import ModelProvider, ModelRequest, ModelResponse, TextSink
from app.engine.state import Message, Usage


class OpenAIProvider(ModelProvider):
    """Streams every call (usage included) and relies on the SDK's own retries and timeout."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        max_retries: int = 2,
        timeout_seconds: float = 60.0,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        # A local OpenAI-compatible server often needs no key, but the SDK insists on one.
        self._client = client or openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "unused",
            max_retries=max_retries,
            timeout=timeout_seconds,
        )

    async def complete(
        self, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelResponse:
        body = {
            **_request_arguments(request),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            # `post` sends the body as it is and yields each chunk as parsed JSON, with the
            # SDK's retries, timeout and errors. `chat.completions.create` would first walk the
            # whole request against the SDK's type hints and build a model of every chunk: on
            # a short turn that costs more than everything else the engine does.
            stream = await self._client.post(
                "/chat/completions",
                body=body,
                cast_to=object,
                stream=True,
                stream_cls=openai.AsyncStream[object],
            )
            assembler = _StreamAssembler()
            async with stream:
                async for chunk in stream:
                    text = assembler.add(chunk)
                    if text and on_text is not None:
                        await on_text(text)
        except openai.APIError as exc:
            # The SDK's message carries the HTTP status ("Error code: 500 - ...") when there is one.
            raise ModelError(f"model {request.model!r}: {exc.message}") from exc
        return assembler.response()

    async def aclose(self) -> None:
        await self._client.close()


def _request_arguments(request: ModelRequest) -> dict[str, Any]:
    arguments: dict[str, Any] = {"model": request.model, "messages": request.messages}
    if request.tools:
        arguments["tools"] = request.tools
        if request.parallel_tool_calls is False:
            arguments["parallel_tool_calls"] = False
    if request.temperature is not None:
        arguments["temperature"] = request.temperature
    if request.max_tokens is not None:
        arguments["max_tokens"] = request.max_tokens
    return arguments


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _StreamAssembler:
    """Joins streamed chunks into the message a non-streamed call would have returned."""

    content: list[str] = field(default_factory=list)
    calls: dict[int, _PartialCall] = field(default_factory=dict)
    usage: Usage = field(default_factory=lambda: Usage(requests=1))

    def add(self, chunk: Any) -> str:
        """Take one streamed chunk (JSON as the server sent it); the text it adds, if any."""
        if not isinstance(chunk, dict):
            return ""
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage.prompt_tokens = usage.get("prompt_tokens") or 0
            self.usage.completion_tokens = usage.get("completion_tokens") or 0
            self.usage.total_tokens = usage.get("total_tokens") or 0
        choices = chunk.get("choices")
        if not choices:
            return ""
        delta = choices[0].get("delta") or {}
        for call_delta in delta.get("tool_calls") or ():
            call = self.calls.setdefault(call_delta.get("index", 0), _PartialCall())
            call.id = call_delta.get("id") or call.id
            function = call_delta.get("function")
            if function is not None:
                call.name += function.get("name") or ""
                call.arguments.append(function.get("arguments") or "")
        content = delta.get("content")
        if content:
            self.content.append(content)
            return str(content)
        return ""

    def response(self) -> ModelResponse:
        message: Message = {"role": "assistant", "content": "".join(self.content) or None}
        if self.calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": "".join(call.arguments)},
                }
                for _, call in sorted(self.calls.items())
            ]
        return ModelResponse(message=message, usage=self.usage)
