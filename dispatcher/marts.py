"""Reads of the public marts, one game date at a time (one partition on BigQuery)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .warehouse import Warehouse

READINESS = "nba_orchestration.fct_phase4_readiness"
PENDING = "nba_orchestration.fct_pending_players"
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


def players(
    warehouse: Warehouse, game_date: dt.date, states: list[str] | None = None
) -> list[dict[str, Any]]:
    """fct_pending_players rows for the date, optionally only some states."""
    sql = f"select * from {PENDING} where game_date = @game_date"
    params: dict[str, Any] = {"game_date": game_date}
    if states:
        sql += " and state in (select * from unnest(@states))"
        params["states"] = list(states)
    return warehouse.query(sql + " order by player_lookup", params)
