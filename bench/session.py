"""One bench run's shared state (arguments, work directory, warehouses, emulators, the
sections printed under the table) and the measuring loop every row uses."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import PROJECT
from .infra import BenchError, progress
from .table import format_value


@dataclass
class Session:
    args: argparse.Namespace
    workdir: Path
    #: Environment of the CLI children: the bench's own, plus PUBSUB_EMULATOR_HOST.
    env: dict[str, str]
    #: Measured runs per row number (the baseline gets as many, interleaved).
    runs: dict[int, int]
    #: Built DuckDB warehouses by name: "one-date", "backfill", "history".
    warehouses: dict[str, Path] = field(default_factory=dict)
    #: Seasons of history row 6's warehouse is built with.
    history_seasons: int = 5
    #: Notes of each build (row 6 prints the history's).
    build_notes: dict[str, list[str]] = field(default_factory=dict)
    #: The BigQuery API emulator's URL (row 8), once started.
    bigquery_endpoint: str | None = None
    #: (row, heading, body) printed under the table: stage tables, profiles.
    sections: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def dispatcher_log(self) -> Path:
        """Where the in-process dispatcher's JSON log lines go while it is measured."""
        return self.workdir / "dispatcher.log"

    def warehouse(self, name: str) -> Path:
        try:
            return self.warehouses[name]
        except KeyError:
            raise BenchError(f"the {name} warehouse was not built") from None

    def cli_env(self, duckdb_path: Path, transport: str = "pubsub") -> dict[str, str]:
        """Environment of a `dispatcher` process on a DuckDB file."""
        env = {**self.env, "DISPATCHER_DUCKDB_PATH": str(duckdb_path)}
        env["DISPATCHER_TRANSPORT"] = transport
        if transport == "pubsub":
            env["DISPATCHER_GCP_PROJECT"] = PROJECT
        return env

    def add_section(self, row: int, heading: str, body: str) -> None:
        self.sections.append((row, heading, body))

    def add_profile(self, row: int, text: str) -> None:
        self.add_section(row, f"### Row {row} profile", f"```\n{text}\n```")


def interleave(
    label: str,
    n: int,
    measure: Callable[[], float],
    baseline: Callable[[], float],
    *,
    unit: str = "s",
    budget_seconds: float | None = None,
) -> tuple[list[float], list[float], list[str]]:
    """n measured runs, each followed by a baseline run, so that drift in the machine or
    an emulator hits both alike. With a budget, stops early (and says so in the notes)
    when another pair would pass it."""
    measured: list[float] = []
    base: list[float] = []
    notes: list[str] = []
    started = time.perf_counter()
    for i in range(n):
        measured.append(measure())
        base.append(baseline())
        progress(
            f"{label}: run {i + 1}/{n}: {format_value(measured[-1], unit)} "
            f"(baseline {format_value(base[-1], unit)})"
        )
        spent = time.perf_counter() - started
        if budget_seconds and i + 1 < n and spent + spent / (i + 1) > budget_seconds:
            notes.append(
                f"stopped after {i + 1} run(s): another would pass the "
                f"{budget_seconds:.0f} s budget"
            )
            break
    return measured, base, notes


def check_dispatch(result: Any, expected: int, what: str) -> Any:
    """A RunResult that published exactly `expected` requests without an error."""
    if result.exit_code != 0 or result.requests_published != expected:
        raise BenchError(
            f"{what}: outcome {result.outcome}, exit {result.exit_code}, "
            f"published {result.requests_published} of {expected}: {result.error}"
        )
    return result
