"""A slate that changes under the alert tests: Phase 4 wrote every feature row a minute
ago but made no player production ready, on a date whose 07:00 PT deadline is ahead;
the helpers make players ready, drain the reference worker, withdraw predictions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dispatcher.config import Settings
from dispatcher.sandbox.slate import SlateSpec
from dispatcher.sandbox.worker import run_worker
from dispatcher.warehouse import connect

GAME_DATE = dt.date(2026, 12, 5)
SPEC = SlateSpec(
    game_date=GAME_DATE,
    share_production_ready=0.0,
    seed=11,
    now=dt.datetime.now(dt.UTC),
    phase4_completed_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
    phase4_in_one_write=True,
)


def execute(settings: Settings, sql: str, params: dict[str, Any] | None = None) -> None:
    wh = connect(settings)
    try:
        wh.execute(sql, {"game_date": GAME_DATE, **(params or {})})
    finally:
        wh.close()


def query(settings: Settings, sql: str) -> list[dict[str, Any]]:
    wh = connect(settings)
    try:
        return wh.query(sql, {"game_date": GAME_DATE})
    finally:
        wh.close()


def make_ready(settings: Settings, share: float) -> None:
    """Phase 4 makes the first ``share`` of the expected players (by name) ready."""
    execute(
        settings,
        "update nba_predictions.ml_feature_store_v2 set is_production_ready = true"
        " where game_date = @game_date and player_lookup in ("
        "  select player_lookup from ("
        "   select player_lookup, row_number() over (order by player_lookup) as n,"
        "          count(*) over () as total"
        "   from nba_orchestration.fct_player_dispatch_state where game_date = @game_date)"
        "  where n <= @share * total)",
        {"share": share},
    )


def drain(settings: Settings) -> None:
    """The reference worker predicts every request in the outbox."""
    run_worker(settings, idle_exit_seconds=0.2)


def unpredict(settings: Settings) -> None:
    """Every prediction of the date withdrawn (is_active false)."""
    execute(
        settings,
        "update nba_predictions.player_prop_predictions set is_active = false"
        " where game_date = @game_date",
    )
