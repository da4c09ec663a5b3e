"""JSON schemas for tools, derived from a function's signature and docstring.

The parameters become a pydantic model (so arguments are validated by pydantic) whose JSON schema
is what the model is shown. A parameter typed `RunContext` is injected, never shown.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docstring_parser
from pydantic import BaseModel, ConfigDict, Field, create_model

from app.engine.context import RunContext


@dataclass(frozen=True, slots=True)
class _Parameter:
    name: str
    field_name: str
    positional_only: bool


@dataclass(frozen=True, slots=True)
class FunctionSchema:
    """A function's parameters as a pydantic model, its JSON schema and where the context goes."""

    description: str
    arguments_model: type[BaseModel]
    json_schema: dict[str, Any]
    context_parameter: str | None
    _parameters: tuple[_Parameter, ...]

    def validate(self, arguments: dict[str, Any]) -> BaseModel:
        """Validate arguments as the model sent them; raises pydantic's `ValidationError`."""
        return self.arguments_model.model_validate(arguments)

    def call_arguments(
        self, validated: BaseModel, ctx: RunContext
    ) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments for the function, with the context injected."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for parameter in self._parameters:
            value = getattr(validated, parameter.field_name)
            if parameter.positional_only:
                args.append(value)
            else:
                kwargs[parameter.name] = value
        if self.context_parameter is not None:
            kwargs[self.context_parameter] = ctx
        return args, kwargs


def function_schema(
    func: Callable[..., Any], *, name: str, description: str | None = None
) -> FunctionSchema:
    """Build the schema of `func`; raises `TypeError` for signatures a model cannot call."""
    signature = inspect.signature(func)
    hints = typing.get_type_hints(func, include_extras=True)
    docstring = docstring_parser.parse(inspect.getdoc(func) or "")
    parameter_docs = {p.arg_name: p.description for p in docstring.params if p.description}

    fields: dict[str, Any] = {}
    parameters: list[_Parameter] = []
    context_parameter: str | None = None
    for index, (param_name, param) in enumerate(signature.parameters.items()):
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"tool {name!r}: *args and **kwargs cannot be described to a model")
        annotation = hints.get(param_name, Any)
        if _is_context(annotation):
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                raise TypeError(
                    f"tool {name!r}: the RunContext parameter cannot be positional-only"
                )
            context_parameter = param_name
            continue
        # Internal field names keep parameter names such as `json` or `schema` from clashing with
        # BaseModel attributes; the alias is what the model sees and sends.
        field_name = f"p{index}"
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[field_name] = (
            annotation,
            Field(default, alias=param_name, description=parameter_docs.get(param_name)),
        )
        parameters.append(
            _Parameter(param_name, field_name, param.kind is inspect.Parameter.POSITIONAL_ONLY)
        )

    model = create_model(
        f"{name}_arguments",
        __config__=ConfigDict(extra="forbid", populate_by_name=False),
        **fields,
    )
    return FunctionSchema(
        description=description if description is not None else _describe(docstring),
        arguments_model=model,
        json_schema=_without_titles(model.model_json_schema()),
        context_parameter=context_parameter,
        _parameters=tuple(parameters),
    )


def _is_context(annotation: Any) -> bool:
    if annotation is RunContext:
        return True
    return any(arg is RunContext for arg in typing.get_args(annotation))


def _describe(docstring: docstring_parser.Docstring) -> str:
    parts = [docstring.short_description, docstring.long_description]
    return "\n\n".join(part for part in parts if part)


def _without_titles(schema: Any) -> Any:
    """Drop pydantic's generated titles, which only cost the model tokens.

    Keys inside `properties` are parameter names (one may be called "title"), so only schema
    objects lose their `title` string.
    """
    if isinstance(schema, list):
        return [_without_titles(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            cleaned[key] = {name: _without_titles(sub) for name, sub in value.items()}
        else:
            cleaned[key] = _without_titles(value)
    return cleaned


class _AnyArguments(BaseModel):
    """Arguments another party checks against its own schema: any object passes here."""

    model_config = ConfigDict(extra="allow")


def foreign_schema(description: str, parameters: dict[str, Any]) -> FunctionSchema:
    """The schema of a tool that runs elsewhere (at the client, on an MCP server): shown to the
    model as given, its arguments checked by whoever runs it."""
    return FunctionSchema(
        description=description,
        arguments_model=_AnyArguments,
        json_schema=parameters,
        context_parameter=None,
        _parameters=(),
    )
