"""`dispatcher demo` replaces its date's inputs and ledger rows: it refuses a warehouse
file holding data it did not write (unless --overwrite), and keeps re-running in a file
it made. The installed `dispatcher`, as an operator runs it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from dispatcher.sandbox.load import write_duckdb
from dispatcher.sandbox.slate import SlateSpec, generate_slate

DISPATCHER = Path(sys.executable).with_name("dispatcher")
DEMO_DATE = "2026-11-28"
#: The demo's mark on a file it made (dispatcher.sandbox.demo.MARKER).
MARKER = "nba_orchestration.sandbox_marker"


def claim_warehouse(path: Path, game_date: dt.date) -> None:
    from dispatcher.sandbox.demo import claim_warehouse

    claim_warehouse(path, game_date)


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    environ.pop("PUBSUB_EMULATOR_HOST", None)
    environ["DISPATCHER_DUCKDB_PATH"] = str(tmp_path / "w.duckdb")
    environ["DISPATCHER_DBT_TARGET_PATH"] = str(tmp_path / "target")
    return subprocess.run(
        [str(DISPATCHER), "demo", *args], cwd=tmp_path, env=environ, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _marked_dates(path: Path) -> list[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        found = con.execute(
            "select count(*) from information_schema.tables"
            " where table_schema = 'nba_orchestration' and table_name = 'sandbox_marker'"
        ).fetchone()
        if not found or not found[0]:
            return []
        rows = con.execute(f"select game_date from {MARKER} order by 1").fetchall()
    return [str(d) for (d,) in rows]


def _real_warehouse(path: Path, game_date: dt.date, *, marked: bool = False) -> None:
    """A warehouse holding a slate the demo did not write (marked: in a file that also
    carries the demo's marker, for another date)."""
    if marked:
        claim_warehouse(path, dt.date.fromisoformat(DEMO_DATE))
    write_duckdb(path, generate_slate(SlateSpec(game_date=game_date, seed=3)))


def _refused(out: subprocess.CompletedProcess, path: Path) -> None:
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr + out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out.stderr
    assert str(path) in errors[0] and "--overwrite" in errors[0], errors[0]
    assert out.stdout == ""  # refused before the first step


@pytest.mark.parametrize(
    "real_date, marked",
    [("2026-11-20", False), (DEMO_DATE, False), ("2026-11-20", True)],
    ids=["another date", "the demo's date", "another date beside the marker"],
)
def test_the_demo_refuses_a_warehouse_holding_data_it_did_not_write(tmp_path, real_date, marked):
    path = tmp_path / "w.duckdb"
    _real_warehouse(path, dt.date.fromisoformat(real_date), marked=marked)
    before = _digest(path)

    out = _demo(tmp_path, "--game-date", DEMO_DATE)

    _refused(out, path)
    assert real_date in out.stderr
    assert _digest(path) == before  # byte-identical: opened read-only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.duckdb"]


def test_overwrite_lets_the_demo_replace_that_date_but_leaves_the_file_unmarked(tmp_path):
    path = tmp_path / "w.duckdb"
    _real_warehouse(path, dt.date(2026, 11, 20))

    out = _demo(tmp_path, "--game-date", DEMO_DATE, "--overwrite", "--json")

    assert out.returncode == 0, out.stderr[-2000:]
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    assert payload["status"]["outcome"] == "ok" and payload["coverage"]["coverage_pct"] == 100.0
    warnings = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert any(w["severity"] == "WARNING" and "--overwrite" in w["message"] for w in warnings)
    with duckdb.connect(str(path), read_only=True) as con:
        dates = con.execute(
            "select distinct game_date from nba_analytics.upcoming_player_game_context order by 1"
        ).fetchall()
    assert [str(d) for (d,) in dates] == ["2026-11-20", DEMO_DATE]  # the other date is kept
    # One --overwrite does not make the file the demo's: the next plain run is refused.
    assert _marked_dates(path) == []
    _refused(_demo(tmp_path, "--game-date", DEMO_DATE), path)


def test_a_file_the_demo_made_runs_again_for_any_date(tmp_path):
    path = tmp_path / "w.duckdb"
    first = _demo(tmp_path, "--game-date", DEMO_DATE, "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    assert _marked_dates(path) == [DEMO_DATE]

    again = _demo(tmp_path, "--game-date", DEMO_DATE, "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    payload = json.loads(again.stdout.strip().splitlines()[-1])
    assert payload["predicted_players"] == 378 and payload["status"]["outcome"] == "ok"

    other = _demo(tmp_path, "--game-date", "2026-11-27", "--json")
    assert other.returncode == 0, other.stderr[-2000:]
    assert _marked_dates(path) == ["2026-11-27", DEMO_DATE]


@pytest.mark.parametrize("kind", ["no file", "no rows"])
def test_a_fresh_file_becomes_the_demos(tmp_path, kind):
    path = tmp_path / "w.duckdb"
    if kind == "no rows":  # the tables exist, empty (e.g. after `dbt build` on nothing)
        write_duckdb(path, [])
    claim_warehouse(path, dt.date(2026, 11, 28))
    claim_warehouse(path, dt.date(2026, 11, 27))
    assert _marked_dates(path) == ["2026-11-27", DEMO_DATE]
