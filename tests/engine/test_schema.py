"""Tool JSON schemas come from signatures and docstrings; arguments are validated by them."""

from __future__ import annotations

import enum
from typing import Literal

import pydantic
import pytest

from app import RunContext, tool


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(pydantic.BaseModel):
    street: str
    zip_code: str = pydantic.Field(description="Postal code.")


def test_scalar_types_and_required_parameters() -> None:
    @tool
    def f(name: str, count: int, ratio: float, active: bool) -> None:
        """Do f."""

    schema = f.schema.json_schema
    assert schema["type"] == "object"
    assert schema["required"] == ["name", "count", "ratio", "active"]
    assert {k: v["type"] for k, v in schema["properties"].items()} == {
        "name": "string",
        "count": "integer",
        "ratio": "number",
        "active": "boolean",
    }
    assert schema["additionalProperties"] is False
    assert "title" not in schema


def test_collections_optional_and_defaults() -> None:
    @tool
    def f(tags: list[str], scores: dict[str, int], note: str | None = None, limit: int = 5) -> None:
        """Do f."""

    props = f.schema.json_schema["properties"]
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["scores"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert props["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert props["limit"] == {"type": "integer", "default": 5}
    assert f.schema.json_schema["required"] == ["tags", "scores"]


def test_literal_and_enum() -> None:
    @tool
    def f(mode: Literal["fast", "slow"], color: Color) -> None:
        """Do f."""

    schema = f.schema.json_schema
    assert schema["properties"]["mode"] == {"enum": ["fast", "slow"], "type": "string"}
    assert schema["$defs"]["Color"] == {"enum": ["red", "blue"], "type": "string"}
    validated = f.schema.validate({"mode": "fast", "color": "blue"})
    _args, kwargs = f.schema.call_arguments(validated, RunContext())
    assert kwargs == {"mode": "fast", "color": Color.BLUE}
    with pytest.raises(pydantic.ValidationError):
        f.schema.validate({"mode": "medium", "color": "red"})


def test_pydantic_model_parameter_is_built() -> None:
    @tool
    def ship(address: Address) -> str:
        """Ship."""
        return address.street

    schema = ship.schema.json_schema
    assert schema["properties"]["address"] == {"$ref": "#/$defs/Address"}
    assert schema["$defs"]["Address"]["properties"]["zip_code"]["description"] == "Postal code."
    validated = ship.schema.validate({"address": {"street": "Main", "zip_code": "1"}})
    _, kwargs = ship.schema.call_arguments(validated, RunContext())
    assert kwargs["address"] == Address(street="Main", zip_code="1")


def test_docstring_gives_description_and_parameter_descriptions() -> None:
    @tool
    def refund(amount: float, order_id: str) -> str:
        """Refund an order.

        Only for delivered orders.

        Args:
            amount: How much to give back, in euros.
            order_id: The order's id.
        """
        return ""

    assert refund.description == "Refund an order.\n\nOnly for delivered orders."
    props = refund.schema.json_schema["properties"]
    assert props["amount"]["description"] == "How much to give back, in euros."
    assert props["order_id"]["description"] == "The order's id."


def test_run_context_is_injected_and_hidden() -> None:
    @tool
    def whoami(ctx: RunContext, greeting: str) -> str:
        """Greet."""
        return f"{greeting} {ctx.variables['user']}"

    assert list(whoami.schema.json_schema["properties"]) == ["greeting"]
    ctx = RunContext(variables={"user": "ada"})
    _args, kwargs = whoami.schema.call_arguments(whoami.schema.validate({"greeting": "hi"}), ctx)
    assert kwargs == {"greeting": "hi", "ctx": ctx}


def test_names_that_clash_with_pydantic_are_fine() -> None:
    @tool
    def f(json: str, schema: int, title: str, model_config: bool = False) -> None:
        """Do f."""

    assert list(f.schema.json_schema["properties"]) == ["json", "schema", "title", "model_config"]
    assert f.schema.json_schema["properties"]["title"] == {"type": "string"}
    validated = f.schema.validate({"json": "x", "schema": 1, "title": "t"})
    _, kwargs = f.schema.call_arguments(validated, RunContext())
    assert kwargs == {"json": "x", "schema": 1, "title": "t", "model_config": False}


def test_unknown_and_missing_arguments_are_refused() -> None:
    @tool
    def f(a: int) -> None:
        """Do f."""

    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        f.schema.validate({"a": 1, "b": 2})
    with pytest.raises(pydantic.ValidationError, match="Field required"):
        f.schema.validate({})


def test_variadic_parameters_are_refused() -> None:
    def f(*values: int) -> None: ...

    with pytest.raises(TypeError, match=r"\*args"):
        tool(f)


def test_positional_only_parameters_are_passed_positionally() -> None:
    @tool
    def f(a: int, /, b: int) -> int:
        """Do f."""
        return a - b

    args, kwargs = f.schema.call_arguments(f.schema.validate({"a": 5, "b": 2}), RunContext())
    assert (args, kwargs) == ([5], {"b": 2})
