"""Per-stage timings and warehouse round trips of one run.

Every run records where its time went (``readiness``, ``claim``, ``publish``,
``confirm``, ...) and how many statements it sent to the warehouse, before the first
publish and in all. They are in the run's result (``RunResult.stages``: ``rounded()`` and
``round_trips()``) and in its closing log line, for operators and the bench alike. Stages
that run on another thread (the backfill's ledger work) overlap: their sum may exceed
the wall time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any


class Stages:
    """Milliseconds per named stage (a stage entered twice adds up), and the warehouse
    statements counted at the first publish and at the end."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        #: (warehouse, its statement count when attached)
        self._warehouses: list[tuple[Any, int]] = []
        self.before_publish: int | None = None

    def _statements(self) -> int:
        return sum(wh.statements - base for wh, base in self._warehouses)

    def attach(self, warehouse: Any) -> None:
        """Count this warehouse's statements from now on, beside those already attached
        (a command that opens its warehouse late, or a second connection)."""
        if warehouse is not None:
            self._warehouses.append((warehouse, warehouse.statements))

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if name == "publish" and self.before_publish is None:
            self.before_publish = self._statements()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t0) * 1000

    def round_trips(self) -> dict[str, int | None]:
        return {"before_publish": self.before_publish, "total": self._statements()}

    def rounded(self) -> dict[str, float]:
        return {name: round(ms, 2) for name, ms in self.ms.items()}
