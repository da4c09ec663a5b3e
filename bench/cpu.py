"""CPU time and memory of processes, from their own accounting in /proc (Linux)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float | None:
    """CPU time of a process and of its children, live or reaped; None if it is gone. The
    postmaster's children are PostgreSQL's backends, so this is the whole database's."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    total = sum(int(ticks) for ticks in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
    return total + sum(cpu_seconds(child) or 0.0 for child in _children(pid))


def _children(pid: int) -> list[int]:
    """Live children of every thread: `uv run` starts its child from a thread of its own."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def rss_mib(pid: int) -> float | None:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * PAGE_BYTES / 2**20


class CpuMeter:
    """CPU seconds each named process (and this driver) used between `start()` and `stop()`;
    a process gone by `stop()` is left out (its CPU time went with it)."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.first: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        used = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return {"driver": time.process_time()} | {k: v for k, v in used.items() if v is not None}

    def start(self) -> CpuMeter:
        self.first = self._read()
        return self

    def stop(self) -> dict[str, float]:
        """Milliseconds used by each process since `start()`."""
        last = self._read()
        return {name: (last[name] - self.first[name]) * 1000 for name in last if name in self.first}


def service_ms(used: Mapping[str, float]) -> float:
    """The service's own processes: the API and the workers (not the database, the fake or
    the driver)."""
    return sum(ms for name, ms in used.items() if name == "api" or name.startswith("worker"))
