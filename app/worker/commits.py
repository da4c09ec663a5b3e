"""Group commit: the checkpoints of many runs stored in one transaction.

A run's checkpoint waits for its commit, so while one transaction commits, other runs'
checkpoints queue; the next transaction takes them all. No write waits for a timer, and under
load one BEGIN and COMMIT serve many runs. Whoever arrives while no transaction is under way
commits the queue itself (no task of its own to outlive the drivers it serves).

One run's write must not fail the others': should a group's transaction fail, each of its
writes is made again alone, and only the one that fails alone reports its error. A write
fenced out (`LeaseLost`) wrote nothing and leaves the group's transaction whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.services.errors import LeaseLost
from app.store.database import Database
from app.store.models import Run

T = TypeVar("T")

MAX_GROUP = 64  # writes a transaction takes; later ones wait for the next


@dataclass(eq=False)
class _Write(Generic[T]):
    operation: Callable[[AsyncSession], Awaitable[T]]
    run: Run  # the run's copy the write keeps as stored: restored if its commit fails
    kept: dict[str, Any]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    done: bool = False
    value: T | None = None
    error: BaseException | None = None

    def restore(self) -> None:
        for key, value in self.kept.items():
            set_committed_value(self.run, key, value)

    def finish(self, value: T | None, error: BaseException | None) -> None:
        self.value, self.error, self.done = value, error, True
        self.wake.set()


class GroupCommit:
    def __init__(self, db: Database, *, max_group: int = MAX_GROUP) -> None:
        self.db = db
        self.max_group = max_group
        self._queue: list[_Write[Any]] = []
        self._committing = False
        self.groups = 0  # transactions committed for more than one write

    async def __call__(
        self, operation: Callable[[AsyncSession], Awaitable[T]], run: Run, *, alone: bool = False
    ) -> T:
        """Run `operation` in a transaction shared with other runs' writes (`alone`: in one of
        its own); return once that has committed. `run` is the copy the operation keeps as
        stored (put back as it was if the commit fails)."""
        kept = {key: value for key, value in inspect(run).dict.items() if not key.startswith("_")}
        write: _Write[T] = _Write(operation, run, kept)
        if alone:
            await self._alone(write)
        else:
            await self._in_group(write)
        if write.error is not None:
            raise write.error
        return write.value  # type: ignore[return-value]  # set, since there was no error

    async def _in_group(self, write: _Write[Any]) -> None:
        self._queue.append(write)
        while not write.done:
            if self._committing:
                write.wake.clear()
                await write.wake.wait()
                continue
            self._committing = True
            try:
                with anyio.CancelScope(shield=True):  # the group's writers wait for it
                    await self._commit_queued()
            finally:
                self._committing = False
                if self._queue:
                    self._queue[0].wake.set()  # the next group's writer commits it

    async def _commit_queued(self) -> None:
        # Runs' rows are locked in the order of their ids, as in every transaction that writes
        # several (a heartbeat's renewal, the start of claimed runs): two such cannot deadlock.
        group = sorted(self._queue[: self.max_group], key=lambda queued: queued.run.id)
        del self._queue[: len(group)]
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            async with self.db.session_scope() as session:
                for write in group:
                    try:
                        outcomes.append((await write.operation(session), None))
                    except LeaseLost as lost:
                        outcomes.append((None, lost))
        except Exception:
            for write in group:
                write.restore()
            for write in group:
                await self._alone(write)
            return
        if len(group) > 1:
            self.groups += 1
        for write, (value, error) in zip(group, outcomes, strict=True):
            write.finish(value, error)

    async def _alone(self, write: _Write[Any]) -> None:
        try:
            async with self.db.session_scope() as session:
                value = await write.operation(session)
        except Exception as exc:
            write.restore()
            write.finish(None, exc)
        else:
            write.finish(value, None)
