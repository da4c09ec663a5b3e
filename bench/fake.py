"""The fake model: an OpenAI-compatible Chat Completions server fast enough not to be the
bottleneck, served by uvicorn in its own process (`python -m bench.fake --port P`).

The last user message says what to answer, as `key=value` words, so every process sending the
same input gets the same script without any set-up call:

- `turns=N` (default 1): N model calls, the first N-1 asking for the tool `tool`, then text;
- `tool=add` (default), or any tool of the example agents (`delete_record` parks the run at
  `pending_approval`, `refund` is `unsafe`), or `blob` of the bench's own agents (`bench.agents`);
- `kilobytes=K` (default 1): what `blob` is asked to return, in KiB;
- `words=W` (default 4): words of the text answer, one streamed chunk each;
- `delay=S`: seconds before each answer starts; `gap=S`: seconds between streamed chunks;
- `stamp=1`: each word of the answer is the wall-clock time it was sent, so a watcher of the
  run's events reads the lag of every `message.delta` from its text.
- `trace=T`: each request is timed (when its body had arrived, when its answer was sent) and
  kept with its body under `T`; `GET /trace/T` hands them over once, so W8 sees what the service
  spends between two model calls of one run.

The answer is the n-th reply, n being the assistant messages after that user message. Replies
without `stamp` are rendered once and served from a cache: bytes out, no JSON encoding.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

Params = tuple[tuple[str, str], ...]

USAGE = {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
MODELS = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model"}]}).encode()
TOOL_ARGUMENTS = {
    "add": {"a": 2, "b": 3},
    "refund": {"amount": 5},
    "delete_record": {"record_id": "r1"},
}


def prompt(**params: object) -> str:
    """The input that makes the fake answer with `params`."""
    return " ".join(f"{key}={value}" for key, value in params.items())


def _parse(text: str) -> Params:
    pairs = (word.split("=", 1) for word in text.split() if "=" in word)
    return tuple(sorted((key, value) for key, value in pairs))


def _envelope(kind: str) -> dict[str, Any]:
    return {"id": "chatcmpl-bench", "object": kind, "created": 0, "model": "bench"}


def _tool_call(options: dict[str, str], position: int) -> dict[str, Any]:
    tool = options.get("tool", "add")
    if tool == "blob":
        arguments = json.dumps({"kilobytes": int(options.get("kilobytes", "1"))})
    else:
        arguments = json.dumps(TOOL_ARGUMENTS.get(tool, {}))
    return {
        "id": f"call_{position}",
        "type": "function",
        "function": {"name": tool, "arguments": arguments},
    }


def _words(count: int, stamp: bool) -> list[str]:
    if stamp:
        return [f" {time.time():.6f}" for _ in range(count)]
    return [f" word{i}" for i in range(count)]


def _reply(params: Params, position: int) -> tuple[list[str], dict[str, Any] | None]:
    """The answer's text chunks, or its tool call."""
    options = dict(params)
    if position < int(options.get("turns", "1")) - 1:
        return [], _tool_call(options, position)
    return _words(int(options.get("words", "4")), options.get("stamp") == "1"), None


def _whole(params: Params, position: int) -> bytes:
    chunks, call = _reply(params, position)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(chunks) or None}
    if call is not None:
        message["tool_calls"] = [call]
    finish = "tool_calls" if call else "stop"
    choice = {"index": 0, "message": message, "finish_reason": finish}
    body = {**_envelope("chat.completion"), "choices": [choice], "usage": USAGE}
    return json.dumps(body).encode()


def _events(params: Params, position: int, usage: bool) -> Iterator[bytes]:
    """The streamed answer's server-sent events, one per chunk."""

    def event(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        chunk = {**_envelope("chat.completion.chunk"), "choices": choices, "usage": usage}
        return f"data: {json.dumps(chunk)}\n\n".encode()

    def delta(content: dict[str, Any]) -> bytes:
        return event([{"index": 0, "delta": content, "finish_reason": None}])

    chunks, call = _reply(params, position)
    stamp = dict(params).get("stamp") == "1"
    yield delta({"role": "assistant", "content": ""})
    for text in chunks:
        # A generator: a stamped word is rendered when it is sent, not when the reply began.
        yield delta({"content": _words(1, stamp=True)[0] if stamp else text})
    if call is not None:
        yield delta({"tool_calls": [{"index": 0, **call}]})
    finish = "tool_calls" if call else "stop"
    yield event([{"index": 0, "delta": {}, "finish_reason": finish}])
    if usage:
        yield event([], USAGE)
    yield b"data: [DONE]\n\n"


@lru_cache(maxsize=4096)
def _cached(params: Params, position: int, stream: bool, usage: bool) -> bytes:
    return b"".join(_events(params, position, usage)) if stream else _whole(params, position)


def _position(messages: list[dict[str, Any]]) -> tuple[str, int]:
    """The last user message's text, and the assistant messages after it."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            content = messages[index].get("content")
            if isinstance(content, list):  # content parts
                content = " ".join(str(part.get("text", "")) for part in content)
            after = sum(1 for m in messages[index + 1 :] if m.get("role") == "assistant")
            return str(content or ""), after
    return "", 0


async def _respond(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read(receive: Receive) -> bytes:
    # Parts joined once at the end: `+=` copies the whole body per part, 14 s for a request
    # carrying 50 MB of tool output (the hostile workload) in 64 KiB parts.
    parts: list[bytes] = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


@dataclass
class _Traced:
    arrived: float  # time.perf_counter(): the body had arrived whole
    answered: float = 0.0  # the answer's last byte was sent
    body: bytes = b""


_traces: dict[str, list[_Traced]] = {}


def _trace_report(token: str) -> bytes:
    """The traced requests of `token`, in order, each with the time it takes this process
    to decode and encode its body again: a floor under what building that request costs."""
    report = []
    for traced in _traces.pop(token, []):
        began = time.perf_counter()
        json.dumps(json.loads(traced.body))
        encode = time.perf_counter() - began
        entry = {"arrived": traced.arrived, "answered": traced.answered, "bytes": len(traced.body)}
        report.append(entry | {"encode_s": encode})
    return json.dumps(report).encode()


async def _completion(receive: Receive, send: Send) -> None:
    raw = await _read(receive)
    arrived = time.perf_counter()
    request = json.loads(raw)
    text, position = _position(request["messages"])
    params = _parse(text)
    options = dict(params)
    stream = bool(request.get("stream"))
    usage = bool((request.get("stream_options") or {}).get("include_usage"))
    if "trace" in options:
        traced = _Traced(arrived, body=raw)
        _traces.setdefault(options["trace"], []).append(traced)
        await _answer(send, params, position, stream, usage)
        traced.answered = time.perf_counter()
        return
    await _answer(send, params, position, stream, usage)


async def _answer(send: Send, params: Params, position: int, stream: bool, usage: bool) -> None:
    options = dict(params)
    delay, gap = float(options.get("delay", 0)), float(options.get("gap", 0))
    if delay:
        await asyncio.sleep(delay)
    if not (stream and (gap or options.get("stamp") == "1")):
        if options.get("stamp") == "1":
            body = _whole(params, position)
        else:
            body = _cached(params, position, stream, usage)
        content_type = b"text/event-stream" if stream else b"application/json"
        await _respond(send, 200, content_type, body)
        return
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for chunk in _events(params, position, usage):  # rendered as sent: stamps are fresh
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if gap:
            await asyncio.sleep(gap)
    await send({"type": "http.response.body", "body": b""})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return  # lifespan is off
    path: str = scope["path"]
    if path.endswith("/chat/completions") and scope["method"] == "POST":
        await _completion(receive, send)
    elif path.startswith("/trace/"):
        await _respond(send, 200, b"application/json", _trace_report(path.removeprefix("/trace/")))
    elif path.endswith("/models"):
        await _respond(send, 200, b"application/json", MODELS)
    else:
        await _respond(send, 404, b"application/json", b'{"error": {"message": "not found"}}')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="off"
    )


if __name__ == "__main__":
    main()
