"""The embedded-default walk-through: a sample slate, the models, the marts."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import dbt, display, marts
from .config import Settings
from .slate import SlateSpec, generate_slate, write_duckdb
from .warehouse import connect

Echo = Callable[[str], None]

READINESS_COLUMNS = [
    "players_in_slate", "players_expected", "players_in_feature_store", "players_ready",
    "ready_pct", "phase4_completed_at", "is_ready", "is_critical",
]  # fmt: skip
COVERAGE_COLUMNS = [
    "players_expected", "players_ready", "players_predicted", "players_in_flight",
    "players_pending", "players_not_ready", "players_missing", "coverage_pct", "alert_level",
]  # fmt: skip


@dataclass(frozen=True)
class DemoResult:
    game_date: dt.date
    readiness: dict[str, Any]
    coverage: dict[str, Any]
    states: dict[str, int]


def run_demo(settings: Settings, game_date: dt.date, echo: Echo = print) -> DemoResult:
    """Write a sample slate for the date, build the models, print the marts."""
    if settings.warehouse != "duckdb":
        raise ValueError("the demo runs on the embedded default (DISPATCHER_WAREHOUSE=duckdb)")
    spec = SlateSpec(game_date=game_date, share_predicted=0.3, share_in_flight=0.1)
    echo(f"1/3 sample slate for {game_date}: {spec.players} players on {spec.teams} teams")
    slate = generate_slate(spec)
    write_duckdb(settings.duckdb_path, slate)
    echo(f"2/3 dbt build into {settings.duckdb_path} ...")
    dbt.build(settings)
    # Requests already in flight go into the ledger, which the build created.
    write_duckdb(settings.duckdb_path, slate, include_ledger=True)
    echo("3/3 reading the marts\n")
    warehouse = connect(settings)
    try:
        readiness = marts.readiness(warehouse, game_date) or {}
        coverage = marts.coverage(warehouse, game_date) or {}
        players = marts.players(warehouse, game_date)
    finally:
        warehouse.close()
    states = dict(Counter(player["state"] for player in players))
    echo("Phase 4 readiness (fct_phase4_readiness)")
    echo(display.record(readiness, READINESS_COLUMNS) + "\n")
    echo("Pending players, first 10 (fct_pending_players, state = pending)")
    pending = [p for p in players if p["state"] == "pending"][:10]
    echo(display.table(pending, ["player_lookup", "team_abbr", "game_id", "reason"]) + "\n")
    echo("Players by state: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    echo("\nPrediction coverage (fct_prediction_coverage)")
    echo(display.record(coverage, COVERAGE_COLUMNS))
    return DemoResult(game_date, readiness, coverage, states)
