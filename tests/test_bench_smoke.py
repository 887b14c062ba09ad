"""bench/ is not part of the suite (no emulator, no warehouse here): only check that
bench.run imports cheaply, parses its arguments and renders its table."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    if str(ROOT) not in sys.path:  # bench/ is not an installed package
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("bench.run")


def test_defaults_run_every_row_often_enough(bench):
    args = bench.build_parser().parse_args([])
    assert args.rows == [1, 2, 3, 4, 5, 6, 7] and not args.quick and args.runs is None
    runs = {row: bench.runs_for(args, row) for row in args.rows}
    assert runs[1] >= 5 and runs[2] >= 5 and runs[3] >= 3 and runs[4] >= 10
    assert runs[5] >= 5 and runs[6] >= 5 and runs[7] >= 3
    quick = bench.build_parser().parse_args(["--quick"])
    assert bench.runs_for(quick, 6) >= 5  # medians of at least five reads, even quick


def test_quick_and_rows_by_number_or_name(bench):
    args = bench.build_parser().parse_args(["--quick", "--rows", "3,trigger-450"])
    assert args.rows == [1, 3] and args.quick
    assert bench.runs_for(args, 3) == bench.RUNS_QUICK[3]
    args = bench.build_parser().parse_args(["--rows", "all", "--runs", "2"])
    assert args.rows == [1, 2, 3, 4, 5, 6, 7] and bench.runs_for(args, 4) == 2
    args = bench.build_parser().parse_args(["--rows", "cli-plan history-reads,7"])
    assert args.rows == [5, 6, 7]


@pytest.mark.parametrize("argv", [["--rows", "9"], ["--rows", ","], ["--runs", "0"]])
def test_bad_arguments_are_usage_errors(bench, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.build_parser().parse_args(argv)
    assert exc.value.code == 2


def test_table_verdicts(bench):
    rows = [
        bench.RowResult(1, "speedup", [0.2, 0.3, 0.25], [6.0], "old", "speedup", 20.0),
        bench.RowResult(3, "ratio", [4.0], [2.0], "raw", "ratio", 1.3),
        bench.RowResult(4, "absolute", [0.05, 0.07], [0.02], "pass", "absolute", 0.3),
    ]
    assert [r.met for r in rows] == [True, False, True]
    table = bench.render_table(rows).splitlines()
    assert table[0] == (
        "| row | measured (median of N runs) | baseline (same run) | ratio | goal | met? |"
    )
    assert "| 250 ms (N=3) | 6.00 s old (N=1) | 24.0× faster | ≥ 20× faster | yes |" in table[2]
    assert "| 2.00× | ≤ 1.3× baseline | **NO** |" in table[3]
    assert "| ≤ 300 ms | yes |" in table[4]


def test_table_rows_in_megabytes_and_sub_rows(bench):
    rows = [
        bench.RowResult(6, "pending", [0.02], [0.015], "one day", "ratio", 2.0, label="6a"),
        bench.RowResult(7, "rss", [330.4, 329.6], [15.2], "help", "absolute", 300.0, unit="MB"),
    ]
    assert [r.met for r in rows] == [True, False]
    table = bench.render_table(rows).splitlines()
    assert table[2].startswith("| 6a. pending | 20 ms (N=1) | 15 ms one day (N=1) | 1.33× |")
    assert table[3] == "| 7. rss | 330 MB (N=2) | 15 MB help (N=1) | 21.71× | ≤ 300 MB | **NO** |"
    assert "- row 6a: measured [20 ms]; baseline [15 ms]" in bench.render_samples(rows)


def test_bench_dates_are_ones_the_cli_accepts(bench):
    import datetime as dt

    from dispatcher.events import EARLIEST_GAME_DATE

    seasons = bench.history_seasons()
    history = [day for season in seasons for day in season]
    assert len(seasons) == 5 and len(history) == len(set(history)) == 845
    backfill_end = bench.BACKFILL_START + dt.timedelta(days=bench.BACKFILL_DATES - 1)
    assert EARLIEST_GAME_DATE <= min(history) and max(history) < bench.GAME_DATE
    assert bench.GAME_DATE < dt.date.today() and backfill_end < dt.date.today()


def test_history_dates_are_fully_predicted(bench):
    counts = bench.history_spec(bench.GAME_DATE).counts()
    assert counts.players == counts.expected == counts.ready == counts.predicted == 450
    assert counts.pending == counts.in_flight == 0
    assert bench.slate_spec(bench.GAME_DATE).counts().pending == bench.PLAYERS_PENDING


def test_peak_rss_is_the_childs_own(bench):
    grow = "b = bytearray(96 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1"
    _, big, done = bench.peak_rss_run([sys.executable, "-c", grow], timeout=60)
    assert done.returncode == 0 and big >= 96
    ballast = bytearray(128 * 2**20)  # this process grows; the next child must not inherit it
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    _, small, done = bench.peak_rss_run([sys.executable, "-c", "print('ok')"], timeout=60)
    assert done.returncode == 0 and done.stdout == "ok\n" and small < 64


def test_stage_labels_follow_the_ledger_sql(bench):
    from dispatcher import ledger

    assert bench.sql_label(ledger._CLAIMED).startswith("claim: read claimed rows")
    assert bench.sql_label(
        " ".join([ledger._TAKE_LOCK, ledger._SELECT_CLAIMS, ledger._INSERT_CLAIMS])
    ).startswith("claim: lock + insert")
    assert bench.sql_label(ledger._CLAIMS_SELECTED).startswith("claim: read claimed rows")
    assert bench.sql_label(ledger._CONFIRM["duckdb"]) == "confirm (ledger update)"
    assert bench.sql_label(ledger._RELEASE) == "release unconfirmed claims"


def test_import_time_summary_keeps_top_level_imports(bench):
    stderr = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       100 |        100 |   json.decoder",
        "import time:       200 |     300000 | json",
        "import time:        50 |    1200000 | duckdb",
    ])  # fmt: skip
    summary = bench.import_time_summary(stderr).splitlines()
    assert summary[1].split() == ["1.200", "s", "duckdb"]
    assert summary[2].split() == ["0.300", "s", "json"]
    assert len(summary) == 3


def test_importing_bench_stays_light():
    code = (
        "import sys, bench.run\n"
        "heavy = [m for m in ('duckdb', 'google.cloud.pubsub_v1', 'dbt') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
