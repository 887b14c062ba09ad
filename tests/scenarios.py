"""Slates the warehouse tests share: one date per readiness situation."""

from __future__ import annotations

import datetime as dt

from dispatcher.sandbox.slate import SlateSpec

#: "now" for every slate and the dbt var as_of, so leases are deterministic.
NOW = dt.datetime(2026, 11, 28, 14, 0, tzinfo=dt.UTC)
AS_OF = NOW.strftime("%Y-%m-%d %H:%M:%S")

READY = SlateSpec(
    game_date=dt.date(2026, 11, 28),
    share_predicted=0.5,
    share_partially_predicted=0.1,
    share_in_flight=0.2,
    share_lease_expired=0.1,
    now=NOW,
)
#: 378 expected, about 60 % ready, but over 100 players: ready by count.
READY_BY_COUNT = SlateSpec(
    game_date=dt.date(2026, 11, 27), share_production_ready=0.6, seed=1, now=NOW
)
#: About 20 % ready, under 100 but at least 50: not ready, not critical.
NOT_READY = SlateSpec(game_date=dt.date(2026, 11, 26), share_production_ready=0.2, seed=2, now=NOW)
#: Fewer than 50 players ready: critical.
CRITICAL = SlateSpec(
    game_date=dt.date(2026, 11, 25), teams=4, share_production_ready=0.5, seed=3, now=NOW
)
#: Everything predicted.
COMPLETE = SlateSpec(
    game_date=dt.date(2026, 11, 24),
    share_missing_features=0.0,
    share_production_ready=1.0,
    share_predicted=1.0,
    seed=4,
    now=NOW,
)

ALL = (READY, READY_BY_COUNT, NOT_READY, CRITICAL, COMPLETE)
#: A date with no slate and no game: every command is a quiet no-op.
NO_SLATE_DATE = dt.date(2026, 11, 23)
#: Games on the schedule but Phase 3 never wrote the slate: critical.
NO_PHASE3 = SlateSpec(game_date=dt.date(2026, 11, 22), teams=4, phase3_written=False, now=NOW)
#: A full, ready slate on a date without a game on the schedule: still no games.
OFF_SCHEDULE = SlateSpec(
    game_date=dt.date(2026, 11, 21), teams=4, share_production_ready=1.0, on_schedule=False,
    seed=5, now=NOW,
)  # fmt: skip
#: The game-day edges, written beside ALL.
GAME_DAY_EDGES = (NO_PHASE3, OFF_SCHEDULE)
