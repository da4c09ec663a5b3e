"""Tools: Python functions the model may call, with their schema, effect and approval rule."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, overload

import anyio.to_thread

from app.engine.context import RunContext
from app.engine.schema import FunctionSchema, function_schema

ToolEffect = Literal["read", "idempotent", "unsafe"]
"""What running a call twice does: `read` and `idempotent` calls may be repeated after a crash."""

ApprovalRule = bool | Callable[[dict[str, Any], RunContext], bool]
"""`True`/`False`, or a function of the call's arguments and the context."""

ApprovalMode = Literal["always", "never", "conditional"]

TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
_TOOL_NAME = re.compile(TOOL_NAME_PATTERN)
_EFFECTS: tuple[ToolEffect, ...] = ("read", "idempotent", "unsafe")


def check_tool_name(name: str) -> str:
    """Chat Completions accepts 1-64 letters, digits, `_` and `-` as a function name."""
    if not _TOOL_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid tool name (1-64 of a-z A-Z 0-9 _ -)")
    return name


@dataclass(frozen=True, eq=False)
class Tool:
    """A function offered to the model. Build one with `@tool`."""

    name: str
    function: Callable[..., Any]
    schema: FunctionSchema
    needs_approval: ApprovalRule = False
    effect: ToolEffect = "unsafe"
    # The client runs it: a call parks the run until a decision brings its output; the
    # function only gives the schema and is never called.
    external: bool = False

    def __post_init__(self) -> None:
        check_tool_name(self.name)
        if self.effect not in _EFFECTS:
            raise ValueError(f"tool {self.name!r}: effect must be one of {', '.join(_EFFECTS)}")
        if not isinstance(self.needs_approval, bool) and not callable(self.needs_approval):
            raise TypeError(f"tool {self.name!r}: needs_approval must be a bool or a function")
        if self.external and self.needs_approval is not False:
            # The client's answer is the decision: there is no separate approval to ask.
            raise ValueError(f"tool {self.name!r}: an external tool takes no needs_approval")

    @property
    def description(self) -> str:
        return self.schema.description

    @property
    def approval_mode(self) -> ApprovalMode:
        if self.external:
            return "always"
        if callable(self.needs_approval):
            return "conditional"
        return "always" if self.needs_approval else "never"

    @functools.cached_property
    def spec(self) -> dict[str, Any]:
        """The Chat Completions `tools` entry for this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.schema.json_schema,
            },
        }

    def requires_approval(self, arguments: dict[str, Any], ctx: RunContext) -> bool:
        rule = self.needs_approval
        return rule(arguments, ctx) if callable(rule) else rule

    async def invoke(self, arguments: Mapping[str, Any], ctx: RunContext) -> Any:
        """Validate and call; a sync function runs in a worker thread, off the event loop."""
        validated = self.schema.validate(dict(arguments))
        args, kwargs = self.schema.call_arguments(validated, ctx)
        if inspect.iscoroutinefunction(self.function):
            return await self.function(*args, **kwargs)
        # Abandoning the thread on cancel lets a cancelled run stop at once; the sync tool sees
        # `ctx.cancelled` and may stop cooperatively.
        return await anyio.to_thread.run_sync(
            functools.partial(self.function, *args, **kwargs), abandon_on_cancel=True
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the plain function, so decorated tools stay usable (and testable) as functions."""
        return self.function(*args, **kwargs)


@overload
def tool(func: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    needs_approval: ApprovalRule = False,
    effect: ToolEffect = "unsafe",
    external: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    needs_approval: ApprovalRule = False,
    effect: ToolEffect = "unsafe",
    external: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a sync or async function into a `Tool`, as `@tool` or `@tool(...)`.

    The schema comes from the signature and the docstring (its summary is the description, its
    `Args:` section describes the parameters). `external=True` declares a tool the client runs:
    its body is never called; a call waits for the client's output.
    """

    def decorate(function: Callable[..., Any]) -> Tool:
        tool_name = check_tool_name(name or function.__name__)
        return Tool(
            name=tool_name,
            function=function,
            schema=function_schema(function, name=tool_name, description=description),
            needs_approval=needs_approval,
            effect=effect,
            external=external,
        )

    return decorate(func) if func is not None else decorate


def as_tool(candidate: Tool | Callable[..., Any]) -> Tool:
    """Agents accept plain functions too; they become tools with the defaults."""
    return candidate if isinstance(candidate, Tool) else tool(candidate)
