"""What every workload gets: the suite's options, the fake model, a place for its files, and
the figures earlier workloads left for later ones."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import Fake, Service, start_service


@dataclass
class Context:
    quick: bool
    fake: Fake
    root: Path  # this suite run's temp dir
    # Figures later workloads build on: "w1_saturation" (runs/s), "model_ms" (one bare call).
    shared: dict[str, float] = field(default_factory=dict)

    def pick(self, full: float, quick: float) -> float:
        return quick if self.quick else full

    def count(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def workdir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def service(
        self,
        stack: ExitStack,
        name: str,
        *,
        database: str = "postgres",
        workers: int = 2,
        settings: dict[str, str] | None = None,
    ) -> Service:
        """The service on `database` (PostgreSQL: 1 API + `workers` workers; SQLite: one
        process), stopped when `stack` closes."""
        return start_service(
            stack,
            self.workdir(name),
            fake_url=self.fake.base_url,
            database=database,
            workers=0 if database == "sqlite" else workers,
            settings=settings,
        )
