"""An OpenAI-compatible Chat Completions server that answers from a script.

Tests use it over real HTTP so the `openai` client, its retries and its streaming all run; users
run it as `agent-runs fake-model` to test their own agents deterministically.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.testing.script import Reply, Script, as_script

Message = dict[str, Any]

# A held stream goes on by itself after this long, so a test that forgets to release ends.
HOLD_LIMIT_SECONDS = 60


class FakeModel:
    """The scripts, the requests seen, and the ASGI app serving them (`.app`)."""

    def __init__(
        self,
        scripts: Mapping[str, Script | list[Reply]] | None = None,
        *,
        keep_requests: int = 10_000,
    ) -> None:
        self.scripts: dict[str, Script] = {}
        # Bounded, so a long-lived `agent-runs fake-model` does not grow without end.
        self.requests: deque[dict[str, Any]] = deque(maxlen=keep_requests)
        self._attempts: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._releases = threading.Semaphore(0)
        self._lock = threading.Condition()
        for name, script in (scripts or {}).items():
            self.script(name, script)
        routes = [
            Route(path, self._chat_completions, methods=["POST"])
            for path in ("/v1/chat/completions", "/chat/completions")
        ]
        routes += [Route(path, self._models) for path in ("/v1/models", "/models")]
        self.app = Starlette(routes=routes)

    def script(self, model: str, script: Script | list[Reply]) -> str:
        """Set the script of `model` (replacing any) and return the model name."""
        with self._lock:
            self.scripts[model] = as_script(script)
        return model

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        with self._lock:
            return [body for body in self.requests if body.get("model") == model]

    def wait_for_requests(self, count: int, model: str | None = None, timeout: float = 10) -> bool:
        """Block until `count` requests (for `model`, or any) have arrived; False on timeout."""

        def arrived() -> bool:
            return (
                sum(1 for b in self.requests if model is None or b.get("model") == model) >= count
            )

        with self._lock:
            return self._lock.wait_for(arrived, timeout)

    def release(self) -> None:
        """Let one hold of a reply's `hold_after` go on."""
        self._releases.release()

    def reset(self) -> None:
        self._releases = threading.Semaphore(0)
        with self._lock:
            self.scripts.clear()
            self.requests.clear()
            self._attempts.clear()

    async def _models(self, request: Request) -> Response:
        data = [{"id": name, "object": "model", "owned_by": "fake"} for name in self.scripts]
        return JSONResponse({"object": "list", "data": data})

    async def _chat_completions(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            messages: list[Message] = list(body["messages"])
            model = str(body["model"])
        except ClientDisconnect:
            return Response(status_code=499)  # nobody is left to answer
        except (ValueError, KeyError, TypeError):
            return _error(400, "the body must be JSON with `model` and `messages`")
        with self._lock:
            self.requests.append(body)
            self._lock.notify_all()
            reply = self._pick(model, messages)
            failing = isinstance(reply, Reply) and reply.error is not None
            attempts = self._count_attempt(model, messages) if failing else 0
        if isinstance(reply, str):
            return _error(400, reply)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.error and (reply.error.times is None or attempts <= reply.error.times):
            headers = {"retry-after-ms": str(reply.error.retry_after_ms)}
            return _error(reply.error.status, reply.error.message, headers)
        completion = _Completion(
            f"chatcmpl-{next(self._ids)}", model, messages, reply, self._releases
        )
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = completion.chunks(include_usage)
            return StreamingResponse(chunks, media_type="text/event-stream")
        return JSONResponse(completion.whole())

    def _pick(self, model: str, messages: list[Message]) -> Reply | str:
        """The scripted reply, or why there is none."""
        last_user = next(
            (i for i in reversed(range(len(messages))) if _role(messages[i]) == "user"), -1
        )
        user_text = _text(messages[last_user]) if last_user >= 0 else ""
        script = self.scripts.get(model) or self.scripts.get("*")
        if script is None:
            return Reply(content=f"echo: {user_text}")
        rule = next(
            (r for r in script.rules if r.match is None or re.search(r.match, user_text)), None
        )
        if rule is None:
            return f"the fake model's script for {model!r} has no rule matching {user_text!r}"
        position = sum(1 for m in messages[last_user + 1 :] if _role(m) == "assistant")
        if position >= len(rule.replies):
            return f"the fake model's script for {model!r} has no reply #{position + 1}"
        return rule.replies[position]

    def _count_attempt(self, model: str, messages: list[Message]) -> int:
        key = _fingerprint(model, messages)
        self._attempts[key] += 1
        return self._attempts[key]


class _Completion:
    """A reply rendered as a Chat Completions response, whole or as stream chunks."""

    def __init__(
        self,
        response_id: str,
        model: str,
        messages: list[Message],
        reply: Reply,
        releases: threading.Semaphore,
    ) -> None:
        self.id = response_id
        self.releases = releases
        self.model = model
        self.reply = reply
        self.created = int(time.time())
        prefix = _fingerprint(model, messages)[:10]
        self.tool_calls: list[dict[str, Any]] = [
            {
                "id": spec.id if spec.id is not None else f"call_{prefix}_{index}",
                "type": "function",
                "function": {
                    "name": spec.name,
                    "arguments": spec.arguments
                    if isinstance(spec.arguments, str)
                    else json.dumps(spec.arguments),
                },
            }
            for index, spec in enumerate(reply.tool_calls)
        ]
        prompt_tokens = max(1, len(json.dumps(messages)) // 4)
        generated = (reply.content or "") + "".join(
            call["function"]["arguments"] for call in self.tool_calls
        )
        completion_tokens = max(1, len(generated) // 4)
        self.usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        self.finish_reason = "tool_calls" if self.tool_calls else "stop"

    def whole(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.reply.content}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
        return {**self._envelope("chat.completion"), "choices": [choice], "usage": self.usage}

    async def chunks(self, include_usage: bool) -> AsyncIterator[str]:
        for index, delta in enumerate(self._deltas()):
            yield self._chunk([{"index": 0, "delta": delta, "finish_reason": None}])
            if self.reply.chunk_delay:
                await asyncio.sleep(self.reply.chunk_delay)
            if index in self.reply.hold_after:  # delta 0 only opens the message: no text yet
                await asyncio.to_thread(self.releases.acquire, True, HOLD_LIMIT_SECONDS)
        yield self._chunk([{"index": 0, "delta": {}, "finish_reason": self.finish_reason}])
        if include_usage:
            yield self._chunk([], usage=self.usage)
        yield "data: [DONE]\n\n"

    def _deltas(self) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": piece} for piece in re.findall(r"\s*\S+", self.reply.content or "")]
        for index, call in enumerate(self.tool_calls):
            arguments = call["function"]["arguments"]
            half = len(arguments) // 2
            head = {"name": call["function"]["name"], "arguments": arguments[:half]}
            deltas.append(
                {
                    "tool_calls": [
                        {"index": index, "id": call["id"], "type": "function", "function": head}
                    ]
                }
            )
            tail = {"arguments": arguments[half:]}
            deltas.append({"tool_calls": [{"index": index, "function": tail}]})
        return deltas

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        chunk = {**self._envelope("chat.completion.chunk"), "choices": choices, "usage": usage}
        return f"data: {json.dumps(chunk)}\n\n"


def _role(message: Message) -> str:
    return str(message.get("role", ""))


def _text(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")


def _fingerprint(model: str, messages: list[Message]) -> str:
    raw = json.dumps([model, messages], sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": "fake_model_error", "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)
