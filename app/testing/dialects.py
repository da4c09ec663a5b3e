"""How real OpenAI-compatible servers stream and what they refuse, for the fake model to play.

Each preset copies one server's habits as its source and issue tracker show them (the README's
"Model servers" names the sources); `FakeModel(dialect="ollama")` answers in that dialect.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

Problem = tuple[int, dict[str, Any]]
"""An HTTP status and its JSON body."""


@dataclass(frozen=True)
class Dialect:
    """One server's habits; the defaults are OpenAI's own."""

    name: str = "openai"
    # Tool calls. index: "each" (0, 1...), "zero" (0 for every call), "none" (no key), "null",
    # "after_text" (from 1 when text came first, as Bedrock's content blocks count).
    call_index: Literal["each", "zero", "none", "null", "after_text"] = "each"
    # id: on a call's "first" delta, on "every" delta, "empty" (""), "in_function" (inside
    # `function`, on every delta), or "changing" (another id on each delta after the first).
    call_id: Literal["first", "every", "empty", "in_function", "changing"] = "first"
    whole_calls: bool = False  # each call in one delta
    repeat_name: bool = False  # the name on every delta of a call
    object_arguments: bool = False  # arguments as a JSON object, not text
    finish_with_calls: str = "tool_calls"  # the finish_reason of an answer with calls
    empty_tool_list: bool = False  # `"tool_calls": []` on every other delta
    signatures: bool = False  # a thought_signature on the first call, required back
    # Text and usage.
    reasoning_field: str | None = None  # the delta field reasoning streams in
    reasoning_required_back: bool = False  # on assistant messages with tool calls
    # final: a chunk of its own, when asked for; last: on the finish chunk, always.
    usage: Literal["final", "last", "every_chunk", "x_groq"] = "final"
    cache_usage: bool = False  # DeepSeek's prompt_cache_hit_tokens and reasoning_tokens
    # The stream itself.
    content_filter: bool = False  # Azure's prompt_filter_results chunk, content_filter_results
    sse_comments: bool = False  # ": PROCESSING" comments and `data:` without a space
    whole_with_tools: bool = False  # a whole chat.completion to `stream: true` with tools
    errors_in_stream: bool = False  # an error as `data: {"error": ...}` after a 200
    # What the server refuses.
    refuses: tuple[str, ...] = ()  # optional request fields
    refuses_back: tuple[str, ...] = ()  # fields it streamed, on history's assistant messages
    refusal_style: Literal["openai", "azure", "mistral"] = "openai"
    # History's tool-call arguments parsed as a JSON object: `""` or broken JSON refused.
    parses_arguments: bool = False
    api_key_header: bool = False  # wants `api-key` and `?api-version=`, not a bearer token

    def check(
        self, body: dict[str, Any], headers: dict[str, str], query: dict[str, str]
    ) -> Problem | None:
        """Why this server would refuse the request, or None."""
        if self.api_key_header and not (
            headers.get("api-key") and query.get("api-version") and "authorization" not in headers
        ):
            message = "Access denied: send the key in `api-key` and the `api-version` query"
            return 401, {"error": {"code": "401", "message": message}}
        refused = next((name for name in self.refuses if name in body), None)
        if refused is not None:
            return self._refusal(refused)
        for number, message in enumerate(body.get("messages") or ()):
            refused = next((n for n in self.refuses_back if n in message), None)
            if refused is not None and message.get("role") == "assistant":
                where = f"'messages.{number}'"
                text = (
                    f"{where} : for 'role:assistant' the following must be satisfied"
                    f"[({where} : property '{refused}' is unsupported, did you mean 'role'?)]"
                )
                return 400, {"error": {"message": text, "type": "invalid_request_error"}}
            problem = self._check_history(message)
            if problem is not None:
                return problem
        return None

    def _check_history(self, message: dict[str, Any]) -> Problem | None:
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        if not calls:
            return None
        if self.parses_arguments and not all(
            _json_object(call["function"].get("arguments")) for call in calls
        ):
            return 400, {"object": "error", "message": "tool call arguments must be a JSON object"}
        if self.reasoning_required_back and not isinstance(message.get("reasoning_content"), str):
            text = "The reasoning_content in the thinking mode must be passed back to the API."
            return 400, {"error": {"message": text, "type": "invalid_request_error"}}
        first = calls[0]
        sent = ((first.get("extra_content") or {}).get("google") or {}).get("thought_signature")
        if self.signatures and sent != signature(first["function"]["name"]):
            text = "Function call is missing a thought_signature in functionCall parts."
            return 400, {"error": {"code": 400, "message": text, "status": "INVALID_ARGUMENT"}}
        return None

    def _refusal(self, field: str) -> Problem:
        if self.refusal_style == "mistral":
            detail = [
                {
                    "type": "extra_forbidden",
                    "loc": ["body", field],
                    "msg": "Extra inputs are not permitted",
                }
            ]
            return 422, {
                "object": "error",
                "message": {"detail": detail},
                "type": "invalid_request_error",
            }
        if self.refusal_style == "azure":
            text = f"Unrecognized request argument supplied: {field}"
        else:
            text = f"Unsupported parameter: '{field}' is not supported with this model."
        return 400, {"error": {"message": text, "type": "invalid_request_error", "param": field}}


def _json_object(arguments: object) -> bool:
    try:
        return isinstance(arguments, str) and isinstance(json.loads(arguments), dict)
    except ValueError:
        return False


def signature(tool_name: str) -> str:
    """The thought signature the fake gives a call to `tool_name` and wants back on it."""
    return "sig-" + hashlib.sha256(tool_name.encode()).hexdigest()[:16]


DIALECTS: dict[str, Dialect] = {
    dialect.name: dialect
    for dialect in [
        Dialect(),
        # ollama openai/openai.go: each call whole, index from the parser (0 for parallel
        # calls), "stop" in older versions, `content: ""` beside calls, thinking as `reasoning`;
        # history arguments are unmarshalled as a JSON object (FromCompletionToolCall).
        Dialect(
            "ollama",
            call_index="zero",
            whole_calls=True,
            finish_with_calls="stop",
            reasoning_field="reasoning",
            parses_arguments=True,
        ),
        # vLLM: the id repeated on every delta, reasoning as `reasoning`, running usage totals
        # on every chunk (continuous_usage_stats); history arguments parsed as JSON by
        # _postprocess_messages: "" or broken JSON refused (vllm#19419, #48922).
        Dialect(
            "vllm",
            call_id="every",
            reasoning_field="reasoning",
            usage="every_chunk",
            parses_arguments=True,
        ),
        # llama.cpp server before #13800: the name on every delta, the id inside `function`.
        Dialect("llamacpp", call_id="in_function", repeat_name=True),
        # SGLang with tools: a whole completion to `stream: true` (sglang#2810).
        Dialect("sglang", whole_with_tools=True),
        # Gemini's OpenAI endpoint: no index, id "", each call whole, "stop" with calls,
        # usage repeated on chunks, Gemini 3's thought_signature required back.
        Dialect(
            "gemini",
            call_index="none",
            call_id="empty",
            whole_calls=True,
            finish_with_calls="stop",
            usage="every_chunk",
            signatures=True,
        ),
        # Azure OpenAI, classic API at an older api-version: filter results, `api-key`,
        # `stream_options` refused.
        Dialect(
            "azure",
            content_filter=True,
            refuses=("stream_options",),
            refusal_style="azure",
            api_key_header=True,
        ),
        # Groq: `"tool_calls": []` on every delta, usage under `x_groq` on the last chunk;
        # its reasoning models (but gpt-oss) stream `reasoning` and refuse it back (gptel#774).
        Dialect(
            "groq",
            empty_tool_list=True,
            usage="x_groq",
            reasoning_field="reasoning",
            refuses_back=("reasoning",),
        ),
        # DeepSeek thinking mode: `reasoning_content` first, required back on tool-call turns.
        Dialect(
            "deepseek",
            reasoning_field="reasoning_content",
            reasoning_required_back=True,
            cache_usage=True,
        ),
        # Mistral (and xAI): `stream_options` refused, as a 422 from request validation; usage
        # comes on the last chunk anyway.
        Dialect("mistral", usage="last", refuses=("stream_options",), refusal_style="mistral"),
        # OpenAI's o-series models: `parallel_tool_calls` refused.
        Dialect("o-series", refuses=("parallel_tool_calls",)),
        # Anthropic's OpenAI SDK compatibility layer: errors inside the stream (at
        # /v1/messages too, as an `error` event, as Anthropic's own API sends overloads).
        Dialect("anthropic-openai", errors_in_stream=True),
        # OpenRouter: keep-alive comments, `data:` without a space, `index: null`.
        Dialect("openrouter", call_index="null", sse_comments=True),
        # LiteLLM over Bedrock: the first call at index 1 after text, the id on its first delta.
        Dialect("litellm", call_index="after_text"),
        # Poolside (pool#9), mlx-openai-server before #216: a new id on each later delta.
        Dialect("poolside", call_id="changing"),
        # Proxies of Ollama's native API: arguments as an object (smolagents#1003).
        Dialect("object-arguments", object_arguments=True, whole_calls=True),
    ]
}
