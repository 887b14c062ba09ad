"""Row 6: the dispatcher's mart reads on a warehouse with seasons of history, against the
same reads on a warehouse with only the target date."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from ..config import GAME_DATE, PLAYERS_PENDING
from ..infra import BenchError, progress, timed, warehouse_copy
from ..session import Session
from ..table import RowResult, format_seconds
from ..warehouses import settings_for

ROW = 6
GOAL_RATIO = 2.0


def _reads() -> dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]]:
    """name -> (the read, what of its answer must be 450)."""
    from dispatcher import marts

    return {
        "pending": (lambda wh: marts.pending(wh, GAME_DATE), len),
        "coverage": (
            lambda wh: marts.coverage(wh, GAME_DATE),
            lambda row: (row or {}).get("players_pending"),
        ),
        "readiness": (
            lambda wh: marts.readiness(wh, GAME_DATE),
            lambda row: (row or {}).get("players_ready"),
        ),
    }


def run(s: Session) -> list[RowResult]:
    from dispatcher.warehouse import connect

    n = s.runs[ROW]
    reads = _reads()
    samples: dict[tuple[str, str], list[float]] = defaultdict(list)

    def read(name: str, where: str, wh: Any) -> float:
        call, count = reads[name]
        elapsed, value = timed(lambda: call(wh))
        if count(value) != PLAYERS_PENDING:
            raise BenchError(f"row 6: {name} read on {where} gives {count(value)}, not 450")
        return elapsed

    with warehouse_copy(s.warehouse("one-date"), s.workdir, "row6-one-day") as one_day:
        warehouses = {
            "history": connect(settings_for(s.warehouse("history"))),
            "one day": connect(settings_for(one_day)),
        }
        try:
            progress("row 6: warm-up (each read once on each warehouse)")
            for name in reads:
                for where, wh in warehouses.items():
                    read(name, where, wh)
            for i in range(n):
                for name in reads:
                    for where, wh in warehouses.items():
                        samples[name, where].append(read(name, where, wh))
                progress(
                    f"row 6: run {i + 1}/{n}: "
                    + "; ".join(
                        f"{name} {format_seconds(samples[name, 'history'][-1])} vs "
                        f"{format_seconds(samples[name, 'one day'][-1])}"
                        for name in reads
                    )
                )
        finally:
            for wh in warehouses.values():
                wh.close()
    history_notes = s.build_notes.get("history", [])
    seasons = f"{s.history_seasons} season{'' if s.history_seasons == 1 else 's'}"
    common = [
        *history_notes,
        "one-day warehouse: only the target date (the rows 1/2 warehouse, a fresh copy); "
        "both dbt-built, both opened once (one connection each), every read warmed up once; "
        "runs interleave history / one day read by read",
    ]

    def result(name: str, label: str, title: str, notes: list[str]) -> RowResult:
        return RowResult(
            row=ROW,
            label=label,
            title=title,
            measured=samples[name, "history"],
            baseline=samples[name, "one day"],
            baseline_label="same read, one-day warehouse",
            goal_kind="ratio",
            goal=GOAL_RATIO,
            notes=notes,
        )

    history, one = samples["readiness", "history"], samples["readiness", "one day"]
    readiness = (
        "not in the table, measured alongside: the readiness read `marts.readiness(wh, D)` "
        f"takes {format_seconds(statistics.median(history))} on the history vs "
        f"{format_seconds(statistics.median(one))} on one day "
        f"({statistics.median(history) / statistics.median(one):.2f}×); samples: history ["
        + ", ".join(map(format_seconds, history))
        + "], one day ["
        + ", ".join(map(format_seconds, one))
        + "]"
    )
    return [
        result(
            "pending",
            "6a",
            f"pending read `marts.pending(wh, D)`, {PLAYERS_PENDING} rows: {seasons} of history",
            common,
        ),
        result(
            "coverage",
            "6b",
            f"coverage read `marts.coverage(wh, D)`: {seasons} of history",
            [readiness],
        ),  # fmt: skip
    ]
