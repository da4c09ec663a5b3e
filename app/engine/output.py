"""Structured output: the JSON schema a run's final answer must follow, and its validation.

An agent's `output_type` (a pydantic model, a dataclass, or a JSON Schema dict) or a run's own
`output_schema` turns the final answer from text into a validated JSON value. Types are
validated by pydantic, schemas by jsonschema-rs (offline: a schema that names a remote `$ref`
is refused, so a run's schema can never make the service fetch a URL).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema_rs
import pydantic

from app.engine.text import storable_json

StructuredOutput = Literal["response_format", "tool"]
"""How a provider is asked for structured output: Chat Completions' `response_format`, or a
tool named `final_output` whose parameters are the schema (for servers without the former)."""

FINAL_OUTPUT_TOOL = "final_output"
# A tool's parameters must be an object: any other schema is wrapped under this property.
_WRAPPED = "response"


class InvalidSchema(ValueError):
    """The output schema is not a valid JSON Schema."""


class InvalidOutput(ValueError):
    """The answer does not validate; `errors` are the reasons, one line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """What a final answer must be: `schema` (JSON Schema), `name` (for the model), and the
    validator that turns an answer's JSON into the value a run stores."""

    name: str
    schema: dict[str, Any]
    _adapter: pydantic.TypeAdapter[Any] | None = None
    _validator: Any = None

    @property
    def wrapped(self) -> bool:
        """Whether the `final_output` tool nests the value under `response`."""
        return self.schema.get("type") != "object"

    def response_format(self) -> dict[str, Any]:
        return {"type": "json_schema", "json_schema": {"name": self.name, "schema": self.schema}}

    def tool_spec(self) -> dict[str, Any]:
        parameters = self.schema
        if self.wrapped:
            parameters = {"type": "object", "properties": {_WRAPPED: self.schema}}
            parameters["required"] = [_WRAPPED]
        description = "Give your final answer: call this once, with the whole answer."
        function = {"name": FINAL_OUTPUT_TOOL, "description": description}
        return {"type": "function", "function": {**function, "parameters": parameters}}

    def validate_text(self, text: str) -> Any:
        """The JSON value of a text answer; raises `InvalidOutput`."""
        try:
            value = json.loads(_without_fence(text), parse_constant=_refuse_constant)
        except ValueError as exc:
            raise InvalidOutput([f"the answer is not JSON: {exc}"]) from exc
        # Escapes may spell a NUL or a lone surrogate: made storable like any model text.
        return self.validate(storable_json(value))

    def validate_arguments(self, arguments: dict[str, Any] | None) -> Any:
        """The value of a `final_output` call's parsed arguments; raises `InvalidOutput`."""
        if arguments is None:
            raise InvalidOutput(["the arguments are not a JSON object"])
        if not self.wrapped:
            return self.validate(arguments)
        if _WRAPPED not in arguments:
            raise InvalidOutput([f"the arguments need the property {_WRAPPED!r}"])
        return self.validate(arguments[_WRAPPED])

    def validate(self, value: Any) -> Any:
        """`value` as the run stores it (JSON-compatible); raises `InvalidOutput`."""
        if self._adapter is not None:
            try:
                return self._adapter.dump_python(self._adapter.validate_python(value), mode="json")
            except pydantic.ValidationError as exc:
                raise InvalidOutput([_pydantic_error(e) for e in exc.errors()]) from exc
        errors = [_schema_error(e) for e in self._validator.iter_errors(value)]
        if errors:
            raise InvalidOutput(errors)
        return value


def output_spec(output_type: type | dict[str, Any]) -> OutputSpec:
    """The spec of an `output_type`; raises `InvalidSchema` (a dict) or `TypeError`."""
    if isinstance(output_type, dict):
        return schema_spec(output_type)
    if not (
        dataclasses.is_dataclass(output_type)
        or (isinstance(output_type, type) and issubclass(output_type, pydantic.BaseModel))
    ):
        raise TypeError(
            f"output_type must be a pydantic model, a dataclass or a JSON Schema dict, "
            f"not {output_type!r}"
        )
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(output_type)
    schema = adapter.json_schema()
    return OutputSpec(_name(output_type.__name__), schema, _adapter=adapter)


def schema_spec(schema: dict[str, Any]) -> OutputSpec:
    """The spec of a JSON Schema; raises `InvalidSchema` with the reason."""
    try:
        jsonschema_rs.meta.validate(schema)
        validator = jsonschema_rs.validator_for(schema, offline=True)
    # Whatever the validator cannot compile is the schema's fault (a body a client sent):
    # a 422, never a 500.
    except (jsonschema_rs.ReferencingError, ValueError, TypeError, RecursionError) as exc:
        reason = str(exc).split("\n", 1)[0]
        raise InvalidSchema(f"not a valid JSON Schema: {reason}") from exc
    title = schema.get("title")
    return OutputSpec(_name(title if isinstance(title, str) else "output"), schema, None, validator)


def repair_message(spec: OutputSpec, errors: list[str], *, tool: bool) -> str:
    """What the model is told when its final answer did not validate. The schema goes along:
    a server that ignored `response_format` may have never seen it."""
    listed = "\n".join(f"- {error}" for error in errors)
    how = (
        f"Call the {FINAL_OUTPUT_TOOL} tool again with arguments that match its schema."
        if tool
        else "Answer again with only a JSON value (no prose) that matches this JSON Schema: "
        + json.dumps(spec.schema)
    )
    return f"Your final answer did not validate:\n{listed}\n{how}"


def _name(text: str) -> str:
    """A `json_schema` name as OpenAI accepts it: letters, digits, `_` and `-`, at most 64."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text)[:64] or "output"


def _without_fence(text: str) -> str:
    """Models asked by instructions alone often wrap JSON in a Markdown code fence."""
    match = re.fullmatch(r"\s*```[a-zA-Z]*\s*\n(.*)\n\s*```\s*", text, re.DOTALL)
    return match.group(1) if match else text


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: the stored value must be valid JSON on every database.
    raise ValueError(f"{name} is not a JSON value")


def _pydantic_error(error: Any) -> str:
    where = "/".join(str(part) for part in error["loc"]) or "(the value)"
    return f"{where}: {error['msg']}"


def _schema_error(error: jsonschema_rs.ValidationError) -> str:
    where = "/".join(str(part) for part in error.instance_path) or "(the value)"
    return f"{where}: {error.message}"
