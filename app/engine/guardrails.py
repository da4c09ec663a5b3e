"""Guardrails: plain functions that check a run's input before the model sees it and its final
answer before the run completes; each passes, trips (the run fails) or asks a person.

A person's answer to an ask is a decision like any approval's, on a pending item of
`kind: "guardrail"` whose id names the guardrail and its stage.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import structlog

from app.engine.context import RunContext, call_users_function
from app.engine.events import RunEvent
from app.engine.state import Decision, GuardrailAsk, GuardrailStage, RunError
from app.engine.text import storable_text

log = structlog.get_logger("app.engine")


@dataclass(frozen=True, slots=True)
class Tripwire:
    """A guardrail's verdict: the run fails (`guardrail_tripped`), saying why."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class AskHuman:
    """A guardrail's verdict: a person decides; the run rests at `pending_approval` meanwhile."""

    reason: str


GuardrailVerdict = bool | Tripwire | AskHuman | None
"""`None` or `True` passes, `False` or `Tripwire` trips, `AskHuman` asks a person."""

Guardrail = Callable[[Any, RunContext], GuardrailVerdict | Awaitable[GuardrailVerdict]]
"""Given the run's new input messages (input) or its final answer (output), and the context."""

GuardrailResult = Literal["passed", "tripped", "ask_human"]

# An item id (`guardrail_<stage>_<name>`) must fit where call ids are kept (100 characters).
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REASON_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Check:
    """One guardrail's result, as the `guardrail.checked` event tells it."""

    name: str
    stage: GuardrailStage
    result: GuardrailResult
    reason: str | None

    def event(self) -> RunEvent:
        data = {"name": self.name, "stage": self.stage, "result": self.result}
        return RunEvent("guardrail.checked", {**data, "reason": self.reason})

    def error(self) -> RunError:
        said = f": {self.reason}" if self.reason else ""
        return RunError(
            "guardrail_tripped", f"guardrail {self.name!r} ({self.stage}) tripped{said}"
        )


def guardrail_name(guardrail: Guardrail) -> str:
    """A guardrail's name is its function's: it names the guardrail in events, errors and the
    inbox."""
    name = getattr(guardrail, "__name__", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"guardrail {guardrail!r} needs a function name of 1-64 of a-z A-Z 0-9 _ - "
            "(a def, not a lambda): its name is how events, errors and people know it"
        )
    return name


def check_guardrails(agent: str, stage: GuardrailStage, guardrails: Sequence[Guardrail]) -> None:
    """Refuse a guardrail that is no function or has no usable name, and two of one name."""
    seen: set[str] = set()
    for guardrail in guardrails:
        if not callable(guardrail):
            raise TypeError(f"agent {agent!r}: {stage} guardrail {guardrail!r} is not callable")
        name = guardrail_name(guardrail)
        if name in seen:
            raise ValueError(f"agent {agent!r} has two {stage} guardrails named {name!r}")
        seen.add(name)


async def run_guardrails(
    guardrails: Sequence[Guardrail], stage: GuardrailStage, data: Any, ctx: RunContext
) -> list[Check]:
    """Every guardrail's result, in the order given; they run at once (each may call out)."""
    results: list[Check | None] = [None] * len(guardrails)

    async def check(index: int, guardrail: Guardrail) -> None:
        # Each gets its own copy: one guardrail changing what it was given changes nothing else.
        results[index] = await _check(guardrail, stage, copy.deepcopy(data), ctx)

    async with anyio.create_task_group() as group:
        for index, guardrail in enumerate(guardrails):
            group.start_soon(check, index, guardrail)
    return [result for result in results if result is not None]


async def _check(guardrail: Guardrail, stage: GuardrailStage, data: Any, ctx: RunContext) -> Check:
    name = guardrail_name(guardrail)
    try:
        verdict = await call_users_function(guardrail, data, ctx)
    except Exception as exc:
        # A check that cannot say lets nothing through.
        log.exception("guardrail.failed", run_id=ctx.run_id, guardrail=name, stage=stage)
        return Check(name, stage, "tripped", _reason(f"raised {type(exc).__name__}: {exc}"))
    match verdict:
        case None | True:
            return Check(name, stage, "passed", None)
        case False:
            return Check(name, stage, "tripped", None)
        case Tripwire(reason=reason):
            return Check(name, stage, "tripped", _reason(reason) or None)
        case AskHuman(reason=reason):
            return Check(name, stage, "ask_human", _reason(reason))
        case _:
            log.error("guardrail.bad_verdict", run_id=ctx.run_id, guardrail=name, stage=stage)
            said = f"returned {verdict!r}, not None, a bool, Tripwire or AskHuman"
            return Check(name, stage, "tripped", _reason(said))


def _reason(text: object) -> str:
    """A reason as stored and shown: text every store carries, of a size a card can show."""
    return storable_text(str(text))[:MAX_REASON_CHARS]


def rejected_error(ask: GuardrailAsk, decision: Decision | None) -> RunError:
    """Why a run whose guardrail's ask a person rejected fails."""
    message = f"guardrail {ask.name!r} ({ask.stage}) asked a person, who rejected it: {ask.reason}"
    if decision is not None and decision.reason:
        message += f" (decision: {decision.reason})"
    return RunError("guardrail_tripped", message)


def decide_ask(
    ask: GuardrailAsk, approved: bool, reason: str | None, decided_by: str | None
) -> Decision:
    """A person's answer to a guardrail's ask, kept with the run's decisions."""
    ask.approved = approved
    return Decision(
        call_id=ask.item_id,
        approved=approved,
        reason=reason,
        arguments={},
        decided_by=decided_by,
        decided_at=datetime.now(UTC),
        source="human",
    )


def asked(checks: Sequence[Check], agent: str) -> list[GuardrailAsk]:
    return [
        GuardrailAsk(check.name, check.stage, agent, check.reason or "")
        for check in checks
        if check.result == "ask_human"
    ]
