"""The context a tool or a dynamic instruction sees while a run executes."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import anyio.to_thread

from app.engine.principal import ANONYMOUS, Principal


@dataclass(frozen=True, slots=True)
class RunContext:
    """What the service passes to tools, instructions and approval handlers.

    `variables` is read-only: it is the client's context for the run, stored with it, and a tool
    running in a thread must not race the engine that serializes it. `principal` is who created
    the run: a tool may act with its identity.
    """

    variables: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    run_id: str | None = None
    session_id: str | None = None
    call_id: str | None = None
    _cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    principal: Principal = ANONYMOUS

    @property
    def cancelled(self) -> bool:
        """True once the run is cancelled or timed out; safe to poll from a sync tool's thread."""
        return self._cancel_event.is_set()


async def call_users_function(function: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async function of the user's (a handler, a guardrail) and await what it
    gives; a sync one runs in a worker thread, off the event loop."""
    if inspect.iscoroutinefunction(function):
        result = await function(*args)
    else:
        result = await anyio.to_thread.run_sync(function, *args)
    if inspect.isawaitable(result):
        result = await result
    return result
