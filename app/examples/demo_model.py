"""The demo model: plays the bundled example agents in process when no model is configured.

It reads the conversation as a model would, in a small way: the numbers it is asked to add, the
record to delete and the amount to refund in the last user message, then the tool results that
came back (a rejection and its reason, the result of arguments a person edited), so that what it
says follows what happened. It is no language model: anything else gets a short help text.
Asked for structured output, it gives its answer the shape of the schema.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import anyio

from app.engine import ModelProvider, ModelRequest, ModelResponse, Usage
from app.engine.model import TextSink

Message = dict[str, Any]

HELP = (
    "Hello! I am the demo model (no model is configured). Ask me to add numbers "
    '("add 10 and 20"), to delete a record ("delete record r_42"), to refund you '
    '("refund 250 euros"), to call a tool I am offered ("call get_weather with '
    '{"city": "Oslo"}"), or to answer slowly.'
)
SLOW = "This answer takes its time, word by word, so you can watch it stream."
REJECTED = ("The tool call was rejected", "The tool call was not done")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
CALL_BY_NAME = re.compile(r"\bcall\s+([a-zA-Z0-9_-]{1,64})")


@dataclass(frozen=True)
class _Result:
    """A tool call of the conversation and what came back."""

    name: str
    arguments: dict[str, Any]
    output: str


@dataclass(frozen=True)
class _Call:
    name: str
    arguments: dict[str, Any]


class DemoModel(ModelProvider):
    """Answers from the conversation alone; `pause` is the slow answer's wait between words."""

    def __init__(self, *, pause: float = 0.3) -> None:
        self.pause = pause

    async def complete(
        self, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelResponse:
        asked = _last_user_text(request.messages)
        tools = {str(t.get("function", {}).get("name")) for t in request.tools}
        reply = _reply(asked, _results_since_user(request.messages), tools)
        prompt_tokens = sum(len(str(m.get("content") or "").split()) + 4 for m in request.messages)
        if isinstance(reply, _Call):
            message: Message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_demo_{len(request.messages)}",
                        "type": "function",
                        "function": {"name": reply.name, "arguments": json.dumps(reply.arguments)},
                    }
                ],
            }
            return ModelResponse(message, _usage(prompt_tokens, 10), "tool_calls")
        slow = reply == SLOW
        schema = _asked_schema(request)
        if schema is not None:
            reply = json.dumps(_shaped(reply, schema, schema))
        words = reply.split(" ")
        for index, word in enumerate(words):
            if slow:
                await anyio.sleep(self.pause)
            if on_text is not None:
                await on_text(word if index == 0 else f" {word}")
        message = {"role": "assistant", "content": reply}
        return ModelResponse(message, _usage(prompt_tokens, len(words)), "stop")


def _asked_schema(request: ModelRequest) -> dict[str, Any] | None:
    """The JSON Schema a structured answer must follow, when one is asked for."""
    response_format = request.response_format or {}
    schema = (response_format.get("json_schema") or {}).get("schema")
    return schema if isinstance(schema, dict) else None


def _shaped(reply: str, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """The text answer as a value of `schema`: strings hold the sentence, numbers its last
    number (the sum the walkthrough asks for), so a structured answer says what the text does."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _shaped(reply, target, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _shaped(reply, schema[key][0], root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    numbers = NUMBER.findall(reply)
    last = float(numbers[-1]) if numbers else 0.0
    match kind:
        case "object":
            properties = schema.get("properties") or {}
            return {name: _shaped(reply, sub, root) for name, sub in properties.items()}
        case "array":
            return [_shaped(reply, schema.get("items") or {}, root)]
        case "integer":
            return int(last)
        case "number":
            return last
        case "boolean":
            return True
        case "null":
            return None
        case _:
            return reply


def _reply(asked: str, results: list[_Result], tools: set[str]) -> _Call | str:
    """The next tool call, or the answer, for what was asked and what the tools said so far."""
    done = [r for r in results if not r.name.startswith("transfer_to_")]
    if not done:  # nothing done yet (a handoff only brought the run to the agent that can)
        return _first_step(asked, tools)
    additions = [r for r in done if r.name == "add"]
    if additions and len(additions) == len(done):
        return _next_addition(asked, additions)
    return " ".join(_report(result) for result in done)


def _first_step(asked: str, tools: set[str]) -> _Call | str:
    text = asked.lower()
    numbers = NUMBER.findall(asked)
    if "slow" in text:
        return SLOW
    named = _named_call(asked, tools)
    if named is not None:
        return named
    if "delete" in text:
        record = re.search(r"\b(?:record\s+)?([a-z]+_\w+)", asked, re.IGNORECASE)
        if record is None:
            return "Which record should I delete? Give me its id, such as r_42."
        return _use(tools, "delete_record", {"record_id": record.group(1)}) or (
            "I cannot delete records: this agent has no tool for it."
        )
    if "refund" in text:
        if not numbers:
            return "How much should I refund, in euros?"
        if "refund" in tools:
            return _Call("refund", {"amount": float(numbers[0])})
        return _use(tools, "transfer_to_billing", {}) or "I cannot refund: no tool here does."
    if re.search(r"\b(add|plus|sum)\b|\+", text):
        whole = [int(float(n)) for n in numbers if float(n).is_integer()]
        if len(whole) < 2:
            return 'Give me two whole numbers to add, as in "add 10 and 20".'
        return _use(tools, "add", {"a": whole[0], "b": whole[1]}) or (
            "I cannot add: this agent has no tool for it."
        )
    return HELP


def _named_call(asked: str, tools: set[str]) -> _Call | None:
    """'call <tool> with {json}': that tool, with the first JSON object after its name, so a
    tool only the client runs (a run's own, which the demo knows nothing of) can be shown."""
    found = CALL_BY_NAME.search(asked)
    if found is None or found.group(1) not in tools:
        return None
    rest = asked[found.end() :]
    start = rest.find("{")
    arguments: Any = {}
    if start >= 0:
        try:
            arguments, _ = json.JSONDecoder().raw_decode(rest[start:])
        except json.JSONDecodeError:
            arguments = {}
    return _Call(found.group(1), arguments if isinstance(arguments, dict) else {})


def _use(tools: set[str], name: str, arguments: dict[str, Any]) -> _Call | None:
    return _Call(name, arguments) if name in tools else None


def _next_addition(asked: str, additions: list[_Result]) -> _Call | str:
    """Add the numbers asked for one at a time, each sum carried into the next call."""
    numbers = [int(float(n)) for n in NUMBER.findall(asked) if float(n).is_integer()]
    last = additions[-1]
    if not re.fullmatch(r"-?\d+", last.output.strip()):
        return _report(last)
    terms = [str(additions[0].arguments.get("a")), *(str(r.arguments.get("b")) for r in additions)]
    if len(terms) < len(numbers):
        return _Call("add", {"a": int(last.output), "b": numbers[len(terms)]})
    return f"{' + '.join(terms)} = {last.output.strip()}."


def _report(result: _Result) -> str:
    """One sentence on one tool call, from its output: done, rejected (and why), or failed."""
    output = result.output.strip()
    if output.startswith(REJECTED):
        reason = output.partition("Reason: ")[2]
        because = f" Reason given: {reason}" if reason else ""
        return f"I did not {_action(result)}: the call was rejected.{because}".rstrip()
    if output.startswith("Error"):
        return f"I could not {_action(result)}. {output}"
    if result.name == "add":
        return f"{result.arguments.get('a')} + {result.arguments.get('b')} = {output}."
    if result.name in ("delete_record", "refund"):
        return f"Done: {output}."
    # One full stop ends the sentence, whether the output ends with one or not.
    return f"{result.name} gave: {output.rstrip('.')}."


def _action(result: _Result) -> str:
    arguments = result.arguments
    if result.name == "delete_record":
        return f"delete record {arguments.get('record_id')}"
    if result.name == "refund":
        amount = arguments.get("amount")
        return f"refund {amount:g} euros" if isinstance(amount, int | float) else "refund"
    return f"run {result.name}"


def _last_user_text(messages: list[Message]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _results_since_user(messages: list[Message]) -> list[_Result]:
    """The tool calls made since the last user message, each with its result."""
    start = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    outputs = {
        m.get("tool_call_id"): _text(m.get("content"))
        for m in messages[start + 1 :]
        if m.get("role") == "tool"
    }
    results = []
    for message in messages[start + 1 :]:
        for call in message.get("tool_calls") or []:
            if call.get("id") in outputs:
                function = call.get("function") or {}
                results.append(
                    _Result(
                        str(function.get("name")),
                        _arguments(function.get("arguments")),
                        outputs[call["id"]],
                    )
                )
    return results


def _arguments(raw: object) -> dict[str, Any]:
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        requests=1,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
