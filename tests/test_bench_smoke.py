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
    assert args.rows == [1, 2, 3, 4] and not args.quick and args.runs is None
    runs = {row: bench.runs_for(args, row) for row in args.rows}
    assert runs[1] >= 5 and runs[2] >= 5 and runs[3] >= 3 and runs[4] >= 10


def test_quick_and_rows_by_number_or_name(bench):
    args = bench.build_parser().parse_args(["--quick", "--rows", "3,trigger-450"])
    assert args.rows == [1, 3] and args.quick
    assert bench.runs_for(args, 3) == bench.RUNS_QUICK[3]
    args = bench.build_parser().parse_args(["--rows", "all", "--runs", "2"])
    assert args.rows == [1, 2, 3, 4] and bench.runs_for(args, 4) == 2


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
