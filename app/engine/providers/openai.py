"""Any OpenAI-compatible Chat Completions server, through the `openai` SDK's async client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk

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
        try:
            stream = await self._client.chat.completions.create(
                **_request_arguments(request),
                stream=True,
                stream_options={"include_usage": True},
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

    def add(self, chunk: ChatCompletionChunk) -> str:
        if chunk.usage is not None:
            self.usage.prompt_tokens = chunk.usage.prompt_tokens
            self.usage.completion_tokens = chunk.usage.completion_tokens
            self.usage.total_tokens = chunk.usage.total_tokens
        if not chunk.choices:
            return ""
        delta = chunk.choices[0].delta
        for call_delta in delta.tool_calls or ():
            call = self.calls.setdefault(call_delta.index, _PartialCall())
            call.id = call_delta.id or call.id
            if call_delta.function is not None:
                call.name += call_delta.function.name or ""
                call.arguments.append(call_delta.function.arguments or "")
        if delta.content:
            self.content.append(delta.content)
            return delta.content
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
