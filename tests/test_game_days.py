"""Game days come from the NBA schedule: a date without a game is a quiet no-op for
every command (outcome no_games, exit 0, no alert, nothing claimed); a game day whose
Phase 3 slate never came is critical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import scenarios
from warehouses import build_template, copy_of

from dispatcher import dbt, ledger, marts
from dispatcher.dispatch import Dispatcher
from dispatcher.warehouse import connect

DISPATCHER = str(Path(sys.executable).with_name("dispatcher"))
NO_GAMES = scenarios.NO_SLATE_DATE
NO_PHASE3 = scenarios.NO_PHASE3.game_date
OFF_SCHEDULE = scenarios.OFF_SCHEDULE.game_date


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(tmp_path_factory.mktemp("game-days"), scenarios.GAME_DAY_EDGES)


@pytest.fixture
def settings(template, tmp_path):
    return copy_of(template, tmp_path)


def _never_sleep(seconds: float) -> None:
    raise AssertionError(f"start waited {seconds} s on a date without a game")


def _rows(settings, sql: str, game_date) -> list[dict]:
    wh = connect(settings)
    try:
        return wh.query(sql, {"game_date": game_date})
    finally:
        wh.close()


def _ledger(settings, game_date) -> list[dict]:
    wh = connect(settings)
    try:
        return ledger.requests(wh, game_date)
    finally:
        wh.close()


def _alerts(settings, game_date) -> list[dict]:
    return _rows(
        settings, "select * from nba_orchestration.alert_log where game_date = @game_date",
        game_date,
    )  # fmt: skip


# -- the marts -----------------------------------------------------------------------------


def test_a_game_day_without_slate_is_a_row_of_zeros_and_critical(settings):
    wh = connect(settings)
    try:
        readiness = marts.readiness(wh, NO_PHASE3)
        coverage = marts.coverage(wh, NO_PHASE3)
    finally:
        wh.close()
    assert readiness["games_scheduled"] == 2  # teams=4
    assert readiness["is_game_day"] is True
    assert readiness["players_in_slate"] == readiness["players_expected"] == 0
    assert (readiness["is_ready"], readiness["is_critical"]) == (False, True)
    assert (coverage["is_game_day"], coverage["alert_level"]) == (True, "critical")


def test_a_slate_off_the_schedule_is_never_pending(settings):
    counts = scenarios.OFF_SCHEDULE.counts()
    wh = connect(settings)
    try:
        readiness = marts.readiness(wh, OFF_SCHEDULE)
        coverage = marts.coverage(wh, OFF_SCHEDULE)
        states = marts.dispatch_state(wh, OFF_SCHEDULE)
        pending = marts.pending(wh, OFF_SCHEDULE)
    finally:
        wh.close()
    assert (readiness["games_scheduled"], readiness["is_game_day"]) == (0, False)
    assert readiness["players_ready"] == counts.ready > 0  # Phase 4 itself is fine
    assert len(states) == counts.expected
    assert {(s["state"], s["reason"]) for s in states} == {
        ("not_ready", "no game on the NBA schedule for this date")
    }
    assert not any(s["can_force_request"] for s in states)
    assert pending == []
    assert coverage["alert_level"] == "ok"


def test_a_date_with_neither_has_no_readiness_row(settings):
    wh = connect(settings)
    try:
        assert marts.readiness(wh, NO_GAMES) is None
        assert marts.coverage(wh, NO_GAMES) is None
    finally:
        wh.close()


# -- every command -------------------------------------------------------------------------


COMMANDS = {
    "trigger": lambda d, day: d.trigger(day, trigger_source="pubsub"),
    "start": lambda d, day: d.start(day, wait_minutes=30, poll_seconds=60),
    "start --force": lambda d, day: d.start(day, force=True),
    "retry": lambda d, day: d.retry(day),
    "status": lambda d, day: d.status(day),
    "plan": lambda d, day: d.plan(day),
    "plan --force": lambda d, day: d.plan(day, force=True),
    "backfill": lambda d, day: d.backfill(day, day),
}


@pytest.mark.parametrize("day", [NO_GAMES, OFF_SCHEDULE], ids=["nothing", "off-schedule"])
@pytest.mark.parametrize("command", COMMANDS)
def test_no_game_is_a_quiet_no_op(settings, command, day):
    result = COMMANDS[command](Dispatcher(settings, sleep=_never_sleep), day)
    expected = "nothing_pending" if command == "backfill" else "no_games"
    assert (result.outcome, result.exit_code, result.error) == (expected, 0, None)
    assert result.alerts == []
    assert result.requests_published == 0
    assert _ledger(settings, day) == []
    assert _alerts(settings, day) == []
    if command == "backfill":
        assert result.dates == []  # a date without a game is not a date of the backfill


@pytest.mark.parametrize("command", ["trigger", "start"])
def test_a_game_day_without_slate_is_critical(settings, command):
    dispatcher = Dispatcher(settings)
    if command == "start":  # the wait is over: it waits for Phase 4 on a game day
        result = dispatcher.start(NO_PHASE3, wait_minutes=0)
    else:
        result = dispatcher.trigger(NO_PHASE3)
    assert (result.outcome, result.exit_code) == ("critical", 3)
    [alert] = result.alerts
    assert alert["level"] == "critical"
    assert "2 games scheduled but no expected player in the Phase 3 slate" in alert["message"]
    assert _ledger(settings, NO_PHASE3) == []


def test_the_status_check_of_a_game_day_without_slate_pages(settings):
    result = Dispatcher(settings).status(NO_PHASE3)
    assert (result.outcome, result.exit_code) == ("sla_breach", 4)
    assert [a["level"] for a in result.alerts] == ["critical"]


def test_the_run_log_records_no_games(settings):
    Dispatcher(settings).status(NO_GAMES)
    [run] = _rows(
        settings, "select * from nba_orchestration.dispatch_runs where game_date = @game_date",
        NO_GAMES,
    )  # fmt: skip
    assert (run["command"], run["outcome"], run["exit_code"]) == ("status", "no_games", 0)


@pytest.mark.parametrize("command", ["trigger", "start", "retry", "status", "plan"])
def test_the_installed_cli_exits_0_on_an_off_day(settings, command):
    env = {**os.environ, "DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path)}
    env.pop("DISPATCHER_TRANSPORT", None)
    result = subprocess.run(
        [DISPATCHER, command, "--game-date", NO_GAMES.isoformat(), "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert (out["outcome"], out["alerts"]) == ("no_games", [])


# -- the readiness gate --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "passes"), [(NO_GAMES, True), (OFF_SCHEDULE, True), (NO_PHASE3, False)],
    ids=["nothing", "off-schedule", "no-phase3"],
)  # fmt: skip
def test_the_gate_gates_game_days_only(settings, day, passes):
    result = dbt.readiness_gate(settings, day.isoformat())
    assert result.success is passes


# -- the same on the BigQuery emulator -------------------------------------------------------


class _NeverPublishes:
    """A transport that fails the test if the dispatcher hands it anything."""

    def __init__(self, _warehouse) -> None:
        pass

    def publish(self, topic, messages, *, timeout):
        raise AssertionError(f"published {len(messages)} messages on a date without a game")

    def close(self) -> None:
        pass


@pytest.mark.bigquery
@pytest.mark.parametrize("day", [NO_GAMES, OFF_SCHEDULE], ids=["nothing", "off-schedule"])
def test_no_game_on_bigquery(bigquery_scenarios, day):
    dispatcher = Dispatcher(
        bigquery_scenarios, sleep=_never_sleep, transport_factory=_NeverPublishes
    )
    for result in (dispatcher.retry(day), dispatcher.status(day), dispatcher.plan(day)):
        assert (result.outcome, result.exit_code, result.alerts) == ("no_games", 0, [])
    wh = connect(bigquery_scenarios)
    try:
        assert ledger.requests(wh, day) == []
    finally:
        wh.close()


@pytest.mark.bigquery
def test_a_game_day_without_slate_on_bigquery(bigquery_scenarios):
    wh = connect(bigquery_scenarios)
    try:
        readiness = marts.readiness(wh, NO_PHASE3)
    finally:
        wh.close()
    assert (readiness["games_scheduled"], readiness["is_critical"]) == (2, True)
