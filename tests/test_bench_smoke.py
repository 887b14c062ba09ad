"""bench/ is not part of the suite's timings: these tests check its pieces (arguments,
tables, dates, peak RSS, log parsing) in about a second, and run `python -m bench.run
--quick` once (≈ 2.5 min on 2 cores, both emulators) to check its report: every row,
numbers that parse, the goals column, the stage tables."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(ROOT))

from bench import config, infra, profiling, run, table  # noqa: E402
from bench.rows import ROWS  # noqa: E402

#: The table lines of a run of every row: row 6 gives 6a and 6b, row 8 gives 8a and 8b.
ALL_LABELS = ["1", "2", "3", "4", "5", "6a", "6b", "7", "8a", "8b", "9a", "9b", "10a", "10b"]
QUICK_TIMEOUT_SECONDS = 900  # about 3.5 min alone; the suite runs beside it on the other core


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


# --- arguments ---------------------------------------------------------------------------


def test_defaults_run_every_row_often_enough():
    args = run.build_parser().parse_args([])
    assert args.rows == list(range(1, 11)) and not args.quick and args.runs is None
    runs = {row: run.runs_for(args, row) for row in args.rows}
    assert runs[1] >= 5 and runs[2] >= 5 and runs[3] >= 3 and runs[4] >= 10
    assert runs[5] >= 5 and runs[6] >= 5 and runs[7] >= 3 and runs[8] >= 3
    assert runs[9] >= 5 and runs[10] >= 2  # row 10: 1,000 answers a run
    quick = run.build_parser().parse_args(["--quick"])
    assert run.runs_for(quick, 6) >= 5  # medians of at least five reads, even quick
    assert all(run.runs_for(quick, row) <= runs[row] for row in ROWS)


def test_quick_and_rows_by_number_or_name():
    args = run.build_parser().parse_args(["--quick", "--rows", "3,trigger-450"])
    assert args.rows == [1, 3] and args.quick
    assert run.runs_for(args, 3) == ROWS[3].runs_quick
    args = run.build_parser().parse_args(["--rows", "all", "--runs", "2"])
    assert args.rows == list(range(1, 11)) and run.runs_for(args, 4) == 2
    args = run.build_parser().parse_args(["--rows", "cli-plan history-reads,7"])
    assert args.rows == [5, 6, 7]
    args = run.build_parser().parse_args(["--rows", "bigquery-round-trips"])
    assert args.rows == [8]


@pytest.mark.parametrize("argv", [["--rows", "11"], ["--rows", ","], ["--runs", "0"]])
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        run.build_parser().parse_args(argv)
    assert exc.value.code == 2


# --- tables ------------------------------------------------------------------------------


def test_table_verdicts():
    rows = [
        table.RowResult(1, "speedup", [0.2, 0.3, 0.25], [6.0], "old", "speedup", 20.0),
        table.RowResult(3, "ratio", [4.0], [2.0], "raw", "ratio", 1.3),
        table.RowResult(4, "absolute", [0.05, 0.07], [0.02], "pass", "absolute", 0.3),
    ]
    assert [r.met for r in rows] == [True, False, True]
    lines = table.render_table(rows).splitlines()
    assert lines[0] == table.TABLE_HEADER
    assert table.TABLE_HEADER == (
        "| row | measured (median of N runs) | baseline (same run) | ratio | goal | met? |"
    )
    assert "| 250 ms (N=3) | 6.00 s old (N=1) | 24.0× faster | ≥ 20× faster | yes |" in lines[2]
    assert "| 2.00× | ≤ 1.3× baseline | **NO** |" in lines[3]
    assert "| ≤ 300 ms | yes |" in lines[4]


def test_table_rows_in_megabytes_statements_and_sub_rows():
    rows = [
        table.RowResult(6, "pending", [0.02], [0.015], "one day", "ratio", 2.0, label="6a"),
        table.RowResult(7, "rss", [330.4, 329.6], [15.2], "help", "absolute", 300.0, unit="MB"),
        table.RowResult(
            8, "trips", [2, 2], [4], "floor", "absolute", 2, unit="statements", label="8a"
        ),
        table.RowResult(8, "all", [6], [4], "floor", "absolute", 5, unit="statements", label="8b"),
    ]
    assert [r.met for r in rows] == [True, False, True, False]
    lines = table.render_table(rows).splitlines()
    assert lines[2].startswith("| 6a. pending | 20 ms (N=1) | 15 ms one day (N=1) | 1.33× |")
    assert lines[3] == "| 7. rss | 330 MB (N=2) | 15 MB help (N=1) | 21.71× | ≤ 300 MB | **NO** |"
    assert lines[4] == (
        "| 8a. trips | 2 statements (N=2) | 4 statements floor (N=1) | 0.50× "
        "| ≤ 2 statements | yes |"
    )
    assert lines[5].endswith("| 6 statements (N=1) | 4 statements floor (N=1) | 1.50× "
                             "| ≤ 5 statements | **NO** |")  # fmt: skip
    assert "- row 6a: measured [20 ms]; baseline [15 ms]" in table.render_samples(rows)
    with pytest.raises(ValueError):
        table.RowResult(1, "bad", [1], [1], "x", "absolute", 1, unit="parsecs")


def test_stage_table_from_run_results():
    runs = [
        table.StageRun(100.0, {"claim": 40.0, "publish": 30.0}, {"before_publish": 3, "total": 6}),
        table.StageRun(
            120.0,
            {"claim": 50.0, "publish": 40.0, "confirm": 10.0},
            {"before_publish": 3, "total": 6},
        ),
    ]
    lines = table.render_stage_table(runs, per="trigger", per_part=("date", 10)).splitlines()
    assert lines[0] == "| stage | mean ms/trigger | ms/date | share |"
    assert lines[2] == "| claim | 45.0 | 4.50 | 40.9 % |"  # stages in the order they ran
    assert lines[3].startswith("| publish | 35.0 |") and lines[4].startswith("| confirm | 5.0 |")
    assert lines[5].startswith(f"| {table.OUTSIDE_STAGES} | 25.0 |")
    assert lines[6] == "| **total per trigger (wall)** | **110.0** | **11.00** | **100.0 %** |"
    assert lines[-1] == (
        "Warehouse round trips per trigger: 3 before the first publish, 6 in all (N=2)."
    )
    summary = table.stages_summary(runs)
    assert summary.startswith("claim 45 ms, publish 35 ms, confirm 5 ms;")


def test_stage_run_reads_a_run_result_and_a_closing_log_line():
    from dispatcher.stages import Stages

    stages = Stages()
    with stages.stage("claim"):
        pass
    with stages.stage("publish"):
        pass

    class Result:
        pass

    result = Result()
    result.stages = stages
    stage_run = table.StageRun.of(0.25, result)
    assert stage_run.wall_ms == 250.0 and list(stage_run.stages_ms) == ["claim", "publish"]
    assert stage_run.round_trips == {"before_publish": 0, "total": 0}

    entry = {
        "message": "trigger finished: dispatched",
        "duration_ms": 80,
        "stages_ms": {"claim": 12.5},
        "round_trips": {"before_publish": 3, "total": 6},
    }
    stderr = "\n".join([
        json.dumps({"message": "trigger started"}),
        "backfill  [####] 100/100\r" + json.dumps(entry),  # a progress bar on the same line
        "",
    ])  # fmt: skip
    assert infra.closing_log(stderr) == entry
    assert table.StageRun.from_log(entry).round_trips["total"] == 6
    with pytest.raises(infra.BenchError):
        infra.closing_log(json.dumps({"message": "no stages"}))


def test_import_time_summary_keeps_top_level_imports():
    stderr = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       100 |        100 |   json.decoder",
        "import time:       200 |     300000 | json",
        "import time:        50 |    1200000 | duckdb",
    ])  # fmt: skip
    summary = profiling.import_time_summary(stderr).splitlines()
    assert summary[1].split() == ["1.200", "s", "duckdb"]
    assert summary[2].split() == ["0.300", "s", "json"]
    assert len(summary) == 3


# --- dates, slates, processes ------------------------------------------------------------


def test_bench_dates_are_ones_the_cli_accepts():
    from dispatcher.events import EARLIEST_GAME_DATE

    seasons = config.history_seasons()
    history = [day for season in seasons for day in season]
    assert len(seasons) == 5 and len(history) == len(set(history)) == 845
    assert len(config.history_seasons(config.HISTORY_QUICK_SEASONS)) == 1
    backfill = config.backfill_dates()
    assert len(backfill) == len(set(backfill)) == config.BACKFILL_DATES == 100
    assert EARLIEST_GAME_DATE <= min(history) and max(history) < config.GAME_DATE
    assert config.GAME_DATE < dt.date.today() and backfill[-1] < dt.date.today()


def test_history_dates_are_fully_predicted():
    counts = config.history_spec(config.GAME_DATE).counts()
    assert counts.players == counts.expected == counts.ready == counts.predicted == 450
    assert counts.pending == counts.in_flight == 0
    assert config.slate_spec(config.GAME_DATE).counts().pending == config.PLAYERS_PENDING


def test_peak_rss_is_the_childs_own():
    grow = "b = bytearray(96 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1"
    _, big, done = infra.peak_rss_run([sys.executable, "-c", grow], timeout=60)
    assert done.returncode == 0 and big >= 96
    ballast = bytearray(128 * 2**20)  # this process grows; the next child must not inherit it
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    _, small, done = infra.peak_rss_run([sys.executable, "-c", "print('ok')"], timeout=60)
    assert done.returncode == 0 and done.stdout == "ok\n" and small < 64


def test_the_bench_measures_through_the_librarys_hooks():
    """No patching of the dispatcher and no SQL text matching: stages come from
    RunResult.stages and closing log lines."""
    sources = [path.read_text() for path in sorted((ROOT / "bench").rglob("*.py"))]
    for needle in ("setattr(", "_wrap(", "sql_label", "mock.patch", "monkeypatch"):
        assert not any(needle in text for text in sources), needle


def test_importing_bench_stays_light():
    code = (
        "import sys, bench.run\n"
        "heavy = [m for m in ('duckdb', 'google.cloud.pubsub_v1', 'google.cloud.bigquery',"
        " 'dbt', 'dispatcher.dispatch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# --- the quick bench, end to end ---------------------------------------------------------

_VALUE = r"(?P<value>\d+(?:\.\d+)?) (?P<unit>ms|s|MB|statements?)"
_MEASURED = re.compile(rf"^{_VALUE} \(N=(?P<n>\d+)\)$")
_BASELINE = re.compile(rf"^{_VALUE} .+ \(N=(?P<n>\d+)\)$")
_RATIO = re.compile(r"^\d+(?:\.\d+)?×( faster)?$")
_GOAL = re.compile(r"^(≤|≥) \d+(?:\.\d+)?(× faster|× baseline| ms| s| MB| statements?)$")


def _emulators_missing() -> str | None:
    servers = infra.load_servers()
    try:
        servers.cloud_sdk_root()
        servers.bqemulator_executable()
    except servers.ServerStartError as exc:
        return str(exc)
    return None


@pytest.mark.pubsub
@pytest.mark.bigquery
def test_quick_bench_reports_every_row(tmp_path):
    missing = _emulators_missing()
    if missing:
        if _on_ci():
            pytest.fail(f"the bench needs both emulators: {missing}", pytrace=False)
        pytest.skip(f"the bench needs both emulators: {missing}")
    env = {k: v for k, v in os.environ.items() if k != "PUBSUB_EMULATOR_HOST"}
    stderr_path = tmp_path / "bench.stderr"
    with stderr_path.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "bench.run", "--quick"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=QUICK_TIMEOUT_SECONDS,
        )
    tail = "\n".join(stderr_path.read_text().splitlines()[-40:])
    assert done.returncode == 0, f"bench exited {done.returncode}:\n{tail}"
    report = done.stdout
    lines = report.splitlines()
    start = lines.index(table.TABLE_HEADER)
    assert lines[start + 1] == "|---|---|---|---|---|---|"
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("| "):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    assert [row[0].split(".", 1)[0] for row in rows] == ALL_LABELS, report
    for label, measured, baseline, ratio, goal, met in rows:
        number = int(label.split(".", 1)[0].rstrip("ab"))
        match = _MEASURED.match(measured)
        assert match, (label, measured)
        assert int(match["n"]) == ROWS[number].runs_quick, (label, measured)
        assert _BASELINE.match(baseline), (label, baseline)
        assert _RATIO.match(ratio), (label, ratio)
        assert _GOAL.match(goal), (label, goal)
        assert met in ("yes", "**NO**"), (label, met)
    by_label = {row[0].split(".", 1)[0]: row for row in rows}
    assert all(by_label[label][1].split()[1].startswith("statement") for label in ("8a", "8b"))
    assert by_label["7"][1].split()[1] == "MB"
    assert re.search(r"^Bench wall time: \d+ s \(--quick;", report, re.M)
    for row in (1, 3, 8):
        heading = next((line for line in lines if line.startswith(f"## Row {row}: where")), None)
        assert heading, f"no stage table for row {row}"
        body = lines[lines.index(heading) + 2 :]
        assert body[0].startswith("| stage | mean ms/")
        assert any(line.startswith("| claim |") for line in body[:12])
        assert any(line.startswith("| **total per") for line in body[:14])
    assert "publish_wait" in report  # the backfill's stages, from its RunResult
