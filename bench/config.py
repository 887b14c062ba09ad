"""What the bench measures on: dates, slate sizes, the raw publishers' settings.

Standard library only (the slate specs import the sandbox inside the functions), so
``bench.run`` and the smoke test can import it cheaply.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Pub/Sub and BigQuery project of both emulators.
PROJECT = "bench-project"
#: dispatcher.transport.REQUEST_TOPIC (checked at run time).
REQUEST_TOPIC = "prediction-request"

#: Rows 1, 2, 5, 6 and 8: one game date with 450 pending players (510 on the slate).
GAME_DATE = dt.date(2026, 3, 15)
PLAYERS_PENDING = 450
#: Rows 3 and 7: a 100-date backfill, 450 pending players each.
BACKFILL_START = dt.date(2025, 10, 21)
BACKFILL_DATES = 100

#: Row 11 (serve-load): six dates × 450 pending; the first is dispatched in the warm-up,
#: the others open one after the other during the load. The idle date has no game.
LOAD_DATES = tuple(dt.date(2026, 3, 16) + dt.timedelta(days=i) for i in range(6))
LOAD_IDLE_DATE = dt.date(2026, 3, 23)

#: Row 6: up to five seasons of history before GAME_DATE, 169 game dates each,
#: 450 players per date, every one fully predicted by the five systems.
HISTORY_SEASON_STARTS = tuple(dt.date(year, 10, 20) for year in range(2020, 2025))
HISTORY_SEASON_DATES = 169
HISTORY_TEAMS, HISTORY_PLAYERS_PER_TEAM = 30, 15
#: --quick builds one season of history instead of five (the reads are the same).
HISTORY_QUICK_SEASONS = 1
#: Row 6 writes fewer seasons when the history would take longer than this to generate.
HISTORY_BUDGET_SECONDS = 300.0

#: The raw batched publisher of row 3's baseline ("raw" publishing in the issue).
RAW_BATCH_MAX_MESSAGES = 1000
RAW_BATCH_MAX_LATENCY = 0.05
FUTURE_TIMEOUT = 120.0


def backfill_dates() -> list[dt.date]:
    return [BACKFILL_START + dt.timedelta(days=i) for i in range(BACKFILL_DATES)]


def history_seasons(count: int = len(HISTORY_SEASON_STARTS)) -> list[list[dt.date]]:
    return [
        [start + dt.timedelta(days=i) for i in range(HISTORY_SEASON_DATES)]
        for start in HISTORY_SEASON_STARTS[:count]
    ]


def slate_spec(game_date: dt.date):
    """450 pending of 510 players: 20 OUT, 10 DOUBTFUL, 30 below the minutes threshold;
    every expected player has production-ready features; nothing predicted or in flight."""
    from dispatcher.sandbox.slate import SlateSpec

    spec = SlateSpec(
        game_date=game_date,
        teams=30,
        players_per_team=17,
        share_out=0.04,
        share_doubtful=0.02,
        share_below_minutes=0.059,
        share_missing_features=0.0,
        share_production_ready=1.0,
        seed=game_date.toordinal(),
    )
    if spec.counts().pending != PLAYERS_PENDING:
        raise ValueError(f"slate spec gives {spec.counts().pending} pending, not 450")
    return spec


def history_spec(game_date: dt.date):
    """A past date: 450 players, all expected, production-ready and predicted by all five
    systems (2,250 prediction rows), nothing pending."""
    from dispatcher.sandbox.slate import SlateSpec

    return SlateSpec(
        game_date=game_date,
        teams=HISTORY_TEAMS,
        players_per_team=HISTORY_PLAYERS_PER_TEAM,
        share_out=0.0,
        share_doubtful=0.0,
        share_below_minutes=0.0,
        share_missing_features=0.0,
        share_production_ready=1.0,
        share_predicted=1.0,
        seed=game_date.toordinal(),
    )
