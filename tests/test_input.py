"""Input leniency: every date option and the Phase 4 event go through events.py's rules.

The CLI cases run the installed `dispatcher` as a subprocess, as an operator would."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dispatcher.events import (
    MAX_DAYS_AHEAD,
    InvalidInput,
    Phase4Event,
    parse_game_date,
    parse_phase4_event,
)

TODAY = dt.date(2026, 11, 29)
SUBPROCESS_TIMEOUT = 60


# -- the installed CLI refuses, exit 2, one line, nothing written ------------------------


def _cli() -> str:
    return str(Path(sys.executable).with_name("dispatcher"))


def _run_cli(tmp_path: Path, args: list[str]) -> tuple[subprocess.CompletedProcess, Path]:
    duckdb_path = tmp_path / "warehouse.duckdb"
    work = tmp_path / "cwd"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update(
        DISPATCHER_WAREHOUSE="duckdb",
        DISPATCHER_TRANSPORT="local",
        DISPATCHER_DUCKDB_PATH=str(duckdb_path),
        DISPATCHER_DBT_TARGET_PATH=str(tmp_path / "target"),
    )
    result = subprocess.run(
        [_cli(), *args],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    return result, duckdb_path


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["retry", "--game-date", "20261129"], ["'--game-date'", "'20261129'"]),
        (["retry", "--game-date", "2026-W48-1"], ["'--game-date'", "'2026-W48-1'"]),
        (["plan", "--game-date", "2026-02-30"], ["'--game-date'", "not a calendar date"]),
        (["backfill", "--start", "20261101", "--end", "2026-11-02"], ["'--start'", "'20261101'"]),
        (["backfill", "--start", "2026-11-01", "--end", "2026-W45-1"], ["'--end'", "'2026-W45-1'"]),
        (["demo", "--game-date", "2026-W48-1"], ["'--game-date'", "'2026-W48-1'"]),
        (["demo", "--game-date", "2031-01-01"], ["'--game-date'", "days after today"]),
        (
            ["trigger", "--event", '{"game_date": "2026-11-28", "players_total": 3}'],
            ["'--event'", "unknown field 'players_total'"],
        ),
    ],
)
def test_cli_refuses_with_one_line_and_writes_nothing(tmp_path, args, names):
    result, duckdb_path = _run_cli(tmp_path, args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for name in names:
        assert name in errors[0], errors[0]
    assert result.stdout == ""
    assert not duckdb_path.exists()
    assert not (tmp_path / "target").exists()
    assert list((tmp_path / "cwd").iterdir()) == []


# -- parse_game_date: exactly YYYY-MM-DD ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("20261129", "must be YYYY-MM-DD"),
        ("2026-W48-1", "must be YYYY-MM-DD"),
        ("2026-W48", "must be YYYY-MM-DD"),
        ("2026-333", "must be YYYY-MM-DD"),
        ("2026-11-29T00:00", "must be YYYY-MM-DD"),
        ("2026-02-30", "not a calendar date"),
        ("2026-13-01", "not a calendar date"),
        ("1999-12-31", "before 2000-01-01"),
        ((TODAY + dt.timedelta(days=MAX_DAYS_AHEAD + 1)).isoformat(), "days after today"),
        (dt.datetime(2026, 11, 28, 12), "must be a YYYY-MM-DD string"),
        (20261129, "must be a YYYY-MM-DD string"),
    ],
)
def test_parse_game_date_refuses(value, reason):
    with pytest.raises(InvalidInput, match=reason):
        parse_game_date(value, today=TODAY)


def test_parse_game_date_names_the_field():
    with pytest.raises(InvalidInput, match="^--start must be YYYY-MM-DD, got '20261101'$"):
        parse_game_date("20261101", today=TODAY, field="--start")


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-29",
        " 2026-11-29 ",
        "2000-01-01",
        (TODAY + dt.timedelta(days=MAX_DAYS_AHEAD)).isoformat(),
        dt.date(2026, 11, 29),
    ],
)
def test_parse_game_date_accepts(value):
    assert isinstance(parse_game_date(value, today=TODAY), dt.date)


# -- parse_phase4_event: the contract's keys, no others --------------------------------------

FULL_EVENT = {
    "event_type": "phase4_complete",
    "processor": "ml_feature_store_v2",
    "game_date": "2026-11-28",
    "players_processed": 400,
    "players_ready": 378,
    "players_failed": 22,
    "timestamp": "2026-11-28T14:05:00Z",
    "run_id": "run-20261128-1405",
}


def test_event_with_every_contract_field_parses():
    event = parse_phase4_event(json.dumps(FULL_EVENT), today=TODAY)
    assert event == Phase4Event(
        game_date=dt.date(2026, 11, 28),
        players_processed=400,
        players_ready=378,
        players_failed=22,
        run_id="run-20261128-1405",
        timestamp=dt.datetime(2026, 11, 28, 14, 5, tzinfo=dt.UTC),
    )
    assert parse_phase4_event(FULL_EVENT, today=TODAY) == event


def test_event_with_only_game_date_parses():
    assert parse_phase4_event('{"game_date": "2026-11-28"}', today=TODAY).game_date == dt.date(
        2026, 11, 28
    )


def test_unknown_key_is_refused_by_name():
    raw = json.dumps({"game_date": "2026-11-28", "players_total": 3})
    with pytest.raises(InvalidInput, match="^event has unknown field 'players_total'$"):
        parse_phase4_event(raw, today=TODAY)


def test_unknown_keys_are_sorted_few_and_short_on_one_line():
    payload = dict(FULL_EVENT)
    payload.update({"zeta": 1, "line\nbreak": 2, "k" * 200: 3, "beta": 4, "omega": 5})
    with pytest.raises(InvalidInput) as caught:
        parse_phase4_event(json.dumps(payload), today=TODAY)
    message = str(caught.value)
    long_key = "'" + "k" * 20 + "..."
    assert message == (f"event has unknown fields 'beta', {long_key}, 'line\\nbreak' and 2 more")
    assert "\n" not in message and len(message) < 120


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"game_date": "20261128"}, "must be YYYY-MM-DD"),
        ({"game_date": "2026-W48-6"}, "must be YYYY-MM-DD"),
        ({"game_date": "2026-11-28", "players_ready": "many"}, "players_ready must be an integer"),
        ({"game_date": "2026-11-28", "players_failed": -1}, "must not be negative"),
        ({"game_date": "2026-11-28", "players_ready": True}, "players_ready must be an integer"),
        ({"game_date": "2026-11-28", "timestamp": "yesterday"}, "not ISO-8601"),
        ({"game_date": "2026-11-28", "event_type": "phase3_complete"}, "event_type"),
        ({"players_ready": 3}, "no game_date"),
    ],
)
def test_existing_event_checks_still_hold(payload, reason):
    with pytest.raises(InvalidInput, match=reason):
        parse_phase4_event(json.dumps(payload), today=TODAY)
