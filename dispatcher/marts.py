"""Reads of the public marts, one game date at a time (one partition on BigQuery)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .warehouse import DISPATCH_STATE, PENDING, READINESS, Warehouse

COVERAGE = "nba_orchestration.fct_prediction_coverage"
LATENCY = "nba_orchestration.fct_dispatch_latency"


def _one(warehouse: Warehouse, table: str, game_date: dt.date) -> dict[str, Any] | None:
    rows = warehouse.query(
        f"select * from {table} where game_date = @game_date", {"game_date": game_date}
    )
    return rows[0] if rows else None


def readiness(warehouse: Warehouse, game_date: dt.date) -> dict[str, Any] | None:
    return _one(warehouse, READINESS, game_date)


def coverage(warehouse: Warehouse, game_date: dt.date) -> dict[str, Any] | None:
    return _one(warehouse, COVERAGE, game_date)


def latency(warehouse: Warehouse, game_date: dt.date) -> dict[str, Any] | None:
    return _one(warehouse, LATENCY, game_date)


def _players(warehouse: Warehouse, table: str, game_date: dt.date) -> list[dict[str, Any]]:
    return warehouse.query(
        f"select * from {table} where game_date = @game_date order by player_lookup",
        {"game_date": game_date},
    )


def dispatch_state(warehouse: Warehouse, game_date: dt.date) -> list[dict[str, Any]]:
    """Every expected player of the date with its state and reason (fct_player_dispatch_state)."""
    return _players(warehouse, DISPATCH_STATE, game_date)


def pending(warehouse: Warehouse, game_date: dt.date) -> list[dict[str, Any]]:
    """The players a dispatch would request now (fct_pending_players)."""
    return _players(warehouse, PENDING, game_date)
