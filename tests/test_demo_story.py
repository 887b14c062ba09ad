"""The demo's timeline and the words it prints for the latency mart: its default date
has its deadline ahead, and every verdict is the mart row's own (the runs of the demo
itself are in test_project.py and test_cli_output.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from dispatcher.sandbox.demo import latency_story, next_game_date, sla_deadline

UTC = dt.UTC


def _at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_the_deadline_is_seven_pacific_daylight_or_standard():
    assert sla_deadline(dt.date(2026, 12, 1)) == _at(2026, 12, 1, 15)
    assert sla_deadline(dt.date(2026, 6, 10)) == _at(2026, 6, 10, 14)


@pytest.mark.parametrize(
    "now, game_date",
    [
        (_at(2026, 12, 1, 10, 24), dt.date(2026, 12, 1)),  # 02:24 PST: today
        (_at(2026, 12, 1, 14, 44), dt.date(2026, 12, 1)),  # 06:44: the run fits before 07:00
        (_at(2026, 12, 1, 14, 46), dt.date(2026, 12, 2)),  # 06:46: too close, tomorrow
        (_at(2026, 12, 1, 16, 0), dt.date(2026, 12, 2)),  # 08:00: past, tomorrow
        (_at(2026, 12, 2, 7, 30), dt.date(2026, 12, 2)),  # 23:30 PST: tomorrow in PT
        (_at(2026, 6, 10, 13, 40), dt.date(2026, 6, 10)),  # 06:40 PDT
        (_at(2026, 6, 10, 14, 40), dt.date(2026, 6, 11)),  # 07:40 PDT (06:40 PST)
    ],
)
def test_the_default_date_has_its_deadline_ahead(now, game_date):
    assert next_game_date(now) == game_date
    assert sla_deadline(next_game_date(now)) - now >= dt.timedelta(minutes=15)


def _row(**changes) -> dict:
    # The mart's row as DuckDB returns it: naive UTC timestamps.
    row = {
        "phase4_ready_at": dt.datetime(2026, 12, 1, 10, 27, 33),
        "first_requested_at": dt.datetime(2026, 12, 1, 10, 27, 35),
        "last_predicted_at": dt.datetime(2026, 12, 1, 10, 28, 3),
        "sla_deadline_at": dt.datetime(2026, 12, 1, 15, 0),
        "minutes_to_first_request": 0.0,
        "latency_alert_level": "ok",
        "players_expected": 378,
        "players_predicted": 378,
        "is_sla_met": True,
    }
    return {**row, **changes}


STARTED = _at(2026, 12, 1, 10, 27, 20)


def test_a_met_sla_in_words():
    assert latency_story(_row(), STARTED) == [
        "Phase 4 ready -> first request: 2 s (minutes_to_first_request 0.0), latency alert ok",
        "SLA met: yes, last prediction 4 h 31 min before the deadline,"
        " 2026-12-01 15:00:00 UTC (07:00 PST)",
    ]


def test_a_missed_sla_says_why():
    late = _row(
        last_predicted_at=dt.datetime(2026, 12, 1, 15, 2, 30),
        first_requested_at=dt.datetime(2026, 12, 1, 10, 40, 33),
        minutes_to_first_request=13.0,
        latency_alert_level="warning",
        is_sla_met=False,
    )
    first, sla = latency_story(late, STARTED)
    assert first == (
        "Phase 4 ready -> first request: 780 s (minutes_to_first_request 13.0),"
        " latency alert warning"
    )
    assert sla.startswith("SLA met: no, last prediction 2 min 30 s after the deadline, ")

    passed = latency_story(_row(is_sla_met=False), _at(2026, 12, 2, 10))[1]
    assert passed.startswith("SLA met: no, the demo started after the deadline, 2026-12-01")

    short = latency_story(_row(is_sla_met=False, players_predicted=370), STARTED)[1]
    assert short.startswith("SLA met: no, 370 of 378 players predicted by the deadline, ")

    none = _row(first_requested_at=None, last_predicted_at=None, players_predicted=0,
                is_sla_met=None)  # fmt: skip
    assert latency_story(none, STARTED) == [
        "Phase 4 ready -> first request: no request",
        "SLA met: no, 0 of 378 players predicted by the deadline,"
        " 2026-12-01 15:00:00 UTC (07:00 PST)",
    ]
