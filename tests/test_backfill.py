"""Backfill: a date range, per-date results, resumable, with a progress bar."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner
from warehouses import build_template, copy_of

from dispatcher.cli import cli
from dispatcher.dispatch import Dispatcher
from dispatcher.sandbox.slate import SlateSpec
from dispatcher.warehouse import connect

START = dt.date(2026, 10, 20)
SPECS = [
    SlateSpec(game_date=START + dt.timedelta(days=i), share_predicted=0.5, seed=20 + i)
    for i in range(5)
]
#: Day 3 of the range has no games.
SPECS = [spec for spec in SPECS if spec.game_date != START + dt.timedelta(days=2)]
END = START + dt.timedelta(days=4)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(tmp_path_factory.mktemp("backfill"), SPECS)


@pytest.fixture
def settings(template, tmp_path):
    return copy_of(template, tmp_path)


def _published_per_date(settings) -> dict[dt.date, int]:
    wh = connect(settings)
    try:
        rows = wh.query(
            "select game_date, count(*) as n from nba_orchestration.request_ledger"
            " where game_date between @start and @end and published_at is not null"
            " group by game_date",
            {"start": START, "end": END},
        )
    finally:
        wh.close()
    return {row["game_date"]: row["n"] for row in rows}


@pytest.mark.parametrize("chunk_days", [1, 2, 10])
def test_backfill_publishes_every_pending_player_once_per_date(settings, chunk_days):
    ticks = []
    result = Dispatcher(settings).backfill(START, END, chunk_days=chunk_days, progress=ticks.append)
    want = {spec.game_date: spec.counts().pending for spec in SPECS}
    assert (result.outcome, result.exit_code) == ("dispatched", 0)
    assert result.requests_published == sum(want.values())
    assert _published_per_date(settings) == want
    assert [day["game_date"] for day in result.dates] == [str(d) for d in want]
    assert {day["game_date"]: day["requests_published"] for day in result.dates} == {
        str(d): n for d, n in want.items()
    }
    assert sum(ticks) == (END - START).days + 1  # every date of the range, slate or not


def test_backfill_resumes_where_it_stopped(settings):
    first_two = Dispatcher(settings).backfill(START, START + dt.timedelta(days=1))
    assert first_two.requests_published == sum(s.counts().pending for s in SPECS[:2])
    rest = Dispatcher(settings).backfill(START, END)
    assert rest.requests_published == sum(s.counts().pending for s in SPECS[2:])
    again = Dispatcher(settings).backfill(START, END)
    assert (again.outcome, again.requests_published) == ("nothing_pending", 0)


def test_backfill_cli_json_and_no_bar_off_a_terminal(settings):
    env = {"DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path), "DISPATCHER_WAREHOUSE": "duckdb",
           "DISPATCHER_TRANSPORT": "local"}  # fmt: skip
    result = CliRunner().invoke(
        cli, ["backfill", "--start", str(START), "--end", str(END), "--json"],
        env=env, catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["requests_published"] == sum(s.counts().pending for s in SPECS)
    assert len(payload["dates"]) == len(SPECS)
    # Off a terminal no progress bar: stderr holds JSON log lines only.
    assert all(json.loads(line) for line in result.stderr.splitlines()), result.stderr


def test_backfill_refuses_a_reversed_range(settings):
    env = {"DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path)}
    result = CliRunner().invoke(cli, ["backfill", "--start", str(END), "--end", str(START)],
                                env=env)  # fmt: skip
    assert result.exit_code == 2
    assert "before --start" in result.output
