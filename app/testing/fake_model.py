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
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.testing import messages_api
from app.testing.completion import Completion, error_event
from app.testing.dialects import DIALECTS, Dialect
from app.testing.script import Reply, Script, as_script

Message = dict[str, Any]


class FakeModel:
    """The scripts, the requests seen, and the ASGI app serving them (`.app`).

    `dialect` (a name of `DIALECTS`, or a `Dialect`) makes it stream, and refuse, as that server
    does: `FakeModel(scripts, dialect="ollama")`.
    """

    def __init__(
        self,
        scripts: Mapping[str, Script | list[Reply]] | None = None,
        *,
        dialect: str | Dialect = "openai",
        keep_requests: int = 10_000,
    ) -> None:
        self.dialect = DIALECTS[dialect] if isinstance(dialect, str) else dialect
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
        routes.append(Route("/v1/messages", self._messages, methods=["POST"]))
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
        reply, attempts = self._take(body, model, messages)
        refused = self.dialect.check(body, dict(request.headers), dict(request.query_params))
        if refused is not None:
            return JSONResponse(refused[1], status_code=refused[0])
        if isinstance(reply, str):
            return _error(400, reply)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        stream = bool(body.get("stream"))
        if reply.error and (reply.error.times is None or attempts <= reply.error.times):
            if stream and self.dialect.errors_in_stream:
                error = {"message": reply.error.message, "type": "fake_model_error"}
                event = error_event(reply.error.status, {"error": error})
                return StreamingResponse(_once(event), media_type="text/event-stream")
            headers = {"retry-after-ms": str(reply.error.retry_after_ms)}
            return _error(reply.error.status, reply.error.message, headers)
        completion = Completion(
            f"chatcmpl-{next(self._ids)}",
            model,
            _fingerprint(model, messages)[:10],
            len(json.dumps(messages)),
            reply,
            self.dialect,
            self._releases,
        )
        if stream and not (self.dialect.whole_with_tools and body.get("tools")):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = completion.chunks(include_usage)
            return StreamingResponse(chunks, media_type="text/event-stream")
        return JSONResponse(completion.whole())

    async def _messages(self, request: Request) -> Response:
        """Anthropic's Messages API, answering from the same scripts."""
        try:
            body = json.loads(await request.body())
            model = str(body["model"])
            messages = messages_api.chat_view(body)
        except ClientDisconnect:
            return Response(status_code=499)
        except (ValueError, KeyError, TypeError, AttributeError):
            return JSONResponse(messages_api.error_body("model and messages are required"), 400)
        reply, attempts = self._take(body, model, messages)
        refused = messages_api.check(body)
        if refused is not None:
            return JSONResponse(refused[1], status_code=refused[0])
        if isinstance(reply, str):
            return JSONResponse(messages_api.error_body(reply), status_code=400)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.error and (reply.error.times is None or attempts <= reply.error.times):
            if body.get("stream") and self.dialect.errors_in_stream:
                event = messages_api.error_event(reply.error.message)
                return StreamingResponse(_once(event), media_type="text/event-stream")
            headers = {"retry-after-ms": str(reply.error.retry_after_ms)}
            error = messages_api.error_body(reply.error.message)
            return JSONResponse(error, status_code=reply.error.status, headers=headers)
        answer = messages_api.MessagesAnswer(
            f"msg_{next(self._ids)}",
            model,
            _fingerprint(model, messages)[:10],
            len(json.dumps(body["messages"])),
            reply,
        )
        if body.get("stream"):
            return StreamingResponse(answer.events(), media_type="text/event-stream")
        return JSONResponse(answer.whole())

    def _take(
        self, body: dict[str, Any], model: str, messages: list[Message]
    ) -> tuple[Reply | str, int]:
        """Record the request; its reply (or why there is none) and which try of a failure."""
        with self._lock:
            self.requests.append(body)
            self._lock.notify_all()
            reply = self._pick(model, messages)
            failing = isinstance(reply, Reply) and reply.error is not None
            return reply, self._count_attempt(model, messages) if failing else 0

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


async def _once(event: str) -> AsyncIterator[str]:
    yield event


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": "fake_model_error", "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)
