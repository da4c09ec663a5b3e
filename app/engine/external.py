"""Tools the client runs: declared by a run (`RunState.tools`) or with `@tool(external=True)`.

The model is offered them like any tool; a call parks the run until the client posts a decision
carrying its output. A run's own tools are offered by every agent the run goes through.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

from app.engine.agent import Agent
from app.engine.output import FINAL_OUTPUT_TOOL
from app.engine.schema import foreign_schema
from app.engine.state import RunState, RunTool
from app.engine.tools import Tool


def _runs_at_the_client(**_: Any) -> NoReturn:
    raise RuntimeError("an external tool runs at the client, never in the service")


def run_tool(spec: RunTool) -> Tool:
    schema = foreign_schema(spec.description, spec.parameters)
    return Tool(name=spec.name, function=_runs_at_the_client, schema=schema, external=True)


def tool_table(agent: Agent, state: RunState) -> dict[str, Tool]:
    """Every tool the model may call in `agent`'s turn of this run: the agent's, then the run's.

    A name the agent took since the run was created (agents changed under a stored run) stays
    the agent's: the run goes on rather than failing over a clash it could not foresee.
    """
    table = agent.tool_table()
    for spec in state.tools:
        table.setdefault(spec.name, run_tool(spec))
    return table


def clashing_names(names: Iterable[str], agents: Iterable[Agent]) -> list[str]:
    """The run tool names some agent's tool (or handoff) already has: any agent may take the
    run over through handoffs, so every registered agent counts, and so does the handoff to it.
    `final_output` is structured output's own tool where a provider is asked for one."""
    taken = {name for agent in agents for name in [*agent.tool_table(), agent.handoff_tool.name]}
    return sorted(set(names) & (taken | {FINAL_OUTPUT_TOOL}))


_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else", "contains")


def parameters_problems(schema: Any) -> list[str]:
    """What keeps `schema` from being a tool's parameters: a JSON Schema of an object, its
    keywords of the right shapes (checked without a validator library: the shapes a model API
    and a client's validator both rely on)."""
    if not isinstance(schema, dict):
        return ["the parameters must be a JSON Schema object"]
    if schema.get("type") != "object":
        return ['the parameters must be a schema of "type": "object"']
    return _schema_problems(schema, "parameters")


def _schema_problems(schema: Any, where: str) -> list[str]:
    if isinstance(schema, bool):
        return []
    if not isinstance(schema, dict):
        return [f"{where}: a schema must be an object or a boolean"]
    problems: list[str] = []
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if kind is not None and not (kinds and all(isinstance(k, str) and k in _TYPES for k in kinds)):
        problems.append(f"{where}.type: {kind!r} is not a JSON Schema type")
    required = schema.get("required")
    if required is not None and (
        not isinstance(required, list)
        or not all(isinstance(r, str) for r in required)
        or len(set(required)) != len(required)
    ):
        problems.append(f"{where}.required: must be a list of distinct names")
    enum = schema.get("enum")
    if enum is not None and not isinstance(enum, list):
        problems.append(f"{where}.enum: must be a list")
    for key in _SCHEMA_MAPS:
        if key not in schema:
            continue
        members = schema[key]
        if not isinstance(members, dict):
            problems.append(f"{where}.{key}: must be an object of schemas")
            continue
        for name, member in members.items():
            problems += _schema_problems(member, f"{where}.{key}.{name}")
    for key in _SCHEMA_LISTS:
        if key not in schema:
            continue
        members = schema[key]
        if not isinstance(members, list) or not members:
            problems.append(f"{where}.{key}: must be a non-empty list of schemas")
            continue
        for index, member in enumerate(members):
            problems += _schema_problems(member, f"{where}.{key}.{index}")
    for key in _SCHEMAS:
        if key in schema:
            problems += _schema_problems(schema[key], f"{where}.{key}")
    return problems
