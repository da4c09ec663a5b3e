"""One small round trip of each kind against a model, told plainly: `agent-runs check-model`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.engine.calls import with_unique_ids
from app.engine.errors import ModelError
from app.engine.model import ModelProvider, ModelRequest, ModelResponse, unusable
from app.engine.output import FINAL_OUTPUT_TOOL, schema_spec
from app.engine.providers.openai import OpenAIProvider
from app.engine.state import Message, Usage
from app.engine.tools import tool

TEXT_PROMPT = "Say hello in one short sentence."
TOOL_PROMPT = "Use the add tool to add 2 and 3."
PARALLEL_PROMPT = "Use the add tool twice, both calls at once: 1 + 2 and 3 + 4."
JSON_PROMPT = "Reply in JSON: the sum of 2 and 3."


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


ADD_TOOL = add.spec
"""Built as agents' tools are, so the check sends what an agent's request would."""
SUM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"sum": {"type": "integer"}},
    "required": ["sum"],
    "additionalProperties": False,
}
SUM_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "sum", "strict": True, "schema": SUM_SCHEMA},
}
REFUSED_FORMAT = (
    'the server refuses response_format: give its MODEL_PROVIDERS entry "structured_output": "tool"'
)
ESSENTIAL = ("text answer", "tool call", "tool result")
"""What every agent needs; the rest only some."""


@dataclass(frozen=True)
class Finding:
    name: str
    works: bool
    detail: str


async def probe(provider: ModelProvider, model: str) -> list[Finding]:
    """Ask `model` for a text answer, a tool call and its answer, parallel calls and JSON."""
    checks = _Probe(provider, model)
    findings = [await checks.text(), *await checks.tool_round_trip(), await checks.parallel()]
    structured = await checks.structured()
    return [*findings, checks.usage_finding(), structured]


class _Probe:
    def __init__(self, provider: ModelProvider, model: str) -> None:
        self.provider, self.model = provider, model
        self.usage = Usage()

    async def ask(self, messages: list[Message], **fields: Any) -> tuple[ModelResponse, int]:
        """The answer, and in how many pieces its text arrived."""
        pieces: list[str] = []

        async def collect(text: str) -> None:
            pieces.append(text)

        response = await self.provider.complete(
            ModelRequest(self.model, messages, **fields), collect
        )
        self.usage.add(response.usage)
        return response, len(pieces)

    async def text(self) -> Finding:
        try:
            response, pieces = await self.ask([_user(TEXT_PROMPT)])
        except ModelError as exc:
            return Finding("text answer", False, str(exc))
        problem = unusable(response)
        if problem is not None:
            return Finding("text answer", False, problem)
        streamed = f"streamed in {pieces} pieces" if pieces > 1 else "in one piece"
        return Finding("text answer", True, f"{_said(response)}, {streamed}")

    async def tool_round_trip(self) -> list[Finding]:
        messages = [_user(TOOL_PROMPT)]
        try:
            response, _ = await self.ask(messages, tools=[ADD_TOOL])
        except ModelError as exc:
            return [Finding("tool call", False, str(exc))]
        calls = with_unique_ids(response.message.get("tool_calls") or [], 1)
        add = next((call for call in calls if call["function"]["name"] == "add"), None)
        if add is None:
            return [Finding("tool call", False, f"no call of add: {_said(response)}")]
        arguments = add["function"]["arguments"]
        call = Finding("tool call", _arguments(arguments) == {"a": 2, "b": 3}, f"add({arguments})")
        results = [{"role": "tool", "tool_call_id": c["id"], "content": "5"} for c in calls]
        try:
            answer, _ = await self.ask([*messages, response.message, *results], tools=[ADD_TOOL])
        except ModelError as exc:
            return [call, Finding("tool result", False, str(exc))]
        works = "5" in (answer.message.get("content") or "")
        return [call, Finding("tool result", works, _said(answer))]

    async def parallel(self) -> Finding:
        try:
            response, _ = await self.ask([_user(PARALLEL_PROMPT)], tools=[ADD_TOOL])
        except ModelError as exc:
            return Finding("parallel calls", False, str(exc))
        calls = response.message.get("tool_calls") or []
        shown = ", ".join(f"{c['function']['name']}({c['function']['arguments']})" for c in calls)
        if len(calls) > 1:
            return Finding("parallel calls", True, f"{len(calls)} calls in one answer: {shown}")
        return Finding("parallel calls", False, f"one call per answer: {shown or _said(response)}")

    async def structured(self) -> Finding:
        """Asked as runs ask the provider: with `response_format`, or a `final_output` tool."""
        if self.provider.structured_output == "tool":
            return await self._structured_by_tool()
        try:
            response, _ = await self.ask([_user(JSON_PROMPT)], response_format=SUM_FORMAT)
        except ModelError as exc:
            return Finding("structured output", False, str(exc))
        provider = self.provider
        if isinstance(provider, OpenAIProvider) and "response_format" in provider.refused(
            self.model
        ):
            # Runs would still validate and repair, but the schema never reaches the model.
            return Finding("structured output", False, REFUSED_FORMAT)
        content = response.message.get("content") or ""
        works = _arguments(content) == {"sum": 5}
        return Finding("structured output", works, f"{content[:80]!r}")

    async def _structured_by_tool(self) -> Finding:
        final_output = schema_spec(SUM_SCHEMA).tool_spec()
        try:
            response, _ = await self.ask([_user(JSON_PROMPT)], tools=[final_output])
        except ModelError as exc:
            return Finding("structured output", False, str(exc))
        calls = response.message.get("tool_calls") or []
        call = next((c for c in calls if c["function"]["name"] == FINAL_OUTPUT_TOOL), None)
        if call is None:
            return Finding(
                "structured output", False, f"no call of final_output: {_said(response)}"
            )
        arguments = call["function"]["arguments"]
        works = _arguments(arguments) == {"sum": 5}
        return Finding("structured output", works, f"final_output({arguments})")

    def usage_finding(self) -> Finding:
        usage = self.usage
        if not usage.prompt_tokens:
            return Finding("usage", False, "no token counts reported: runs will show 0 tokens")
        detail = (
            f"{usage.prompt_tokens} prompt tokens ({usage.cached_tokens} cached), "
            f"{usage.completion_tokens} completion ({usage.reasoning_tokens} reasoning) "
            f"over {usage.requests} requests"
        )
        return Finding("usage", True, detail)


def _user(text: str) -> Message:
    return {"role": "user", "content": text}


def _said(response: ModelResponse) -> str:
    content = response.message.get("content") or ""
    return repr(content[:80]) if content else "no text"


def _arguments(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None
