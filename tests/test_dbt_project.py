"""The dbt project as people run it: the readiness gate, rebuilds, parsing without credentials."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import scenarios

from dispatcher import dbt
from dispatcher.warehouse import connect

ROOT = Path(__file__).resolve().parent.parent
DBT = str(Path(sys.executable).with_name("dbt"))


@pytest.mark.parametrize(
    ("spec", "passes"),
    [
        (scenarios.READY, True),
        (scenarios.READY_BY_COUNT, True),
        (scenarios.COMPLETE, True),
        (scenarios.NOT_READY, False),
        (scenarios.CRITICAL, False),
    ],
    ids=lambda value: str(getattr(value, "game_date", value)),
)
def test_readiness_gate_on_duckdb(duckdb_scenarios, spec, passes):
    result = dbt.readiness_gate(duckdb_scenarios, spec.game_date.isoformat())
    assert result.success is passes
    assert len(result.statuses) == 1  # the gate and nothing else


def test_readiness_gate_passes_a_date_without_games(duckdb_scenarios):
    result = dbt.readiness_gate(duckdb_scenarios, scenarios.NO_SLATE_DATE.isoformat())
    assert result.success is True


def test_readiness_gate_fails_a_game_day_without_slate(duckdb_scenarios):
    result = dbt.readiness_gate(duckdb_scenarios, scenarios.NO_PHASE3.game_date.isoformat())
    assert result.success is False


@pytest.mark.parametrize("bad", ["2026-13-01", "yesterday", "2026-11-28'; drop table x; --"])
def test_readiness_gate_refuses_a_malformed_date(duckdb_scenarios, bad):
    result = dbt.readiness_gate(duckdb_scenarios, bad)
    assert result.success is False
    assert result.statuses == []  # refused at compile time, nothing ran


@pytest.mark.parametrize(
    ("spec", "passes"), [(scenarios.READY, True), (scenarios.NOT_READY, False)]
)
def test_readiness_gate_on_bigquery(bigquery_scenarios, spec, passes):
    result = dbt.readiness_gate(bigquery_scenarios, spec.game_date.isoformat())
    assert result.success is passes


def _gate(settings, game_date: str) -> subprocess.CompletedProcess[str]:
    """The README's gate command as a subprocess: `--vars '{game_date: D}'`, D verbatim."""
    env = {**os.environ, "DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path)}
    return subprocess.run(
        [
            DBT, "test", "--select", "tag:readiness_gate",
            "--project-dir", str(ROOT), "--profiles-dir", str(ROOT),
            "--target-path", str(settings.dbt_target_path),
            "--log-path", str(settings.dbt_target_path / "logs"),
            "--vars", f"{{game_date: {game_date}}}",
        ],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_gate_command_line_as_documented(duckdb_scenarios):
    """The exact command of the README, as a subprocess, exit codes included."""
    ready = _gate(duckdb_scenarios, f'"{scenarios.READY.game_date}"')
    assert ready.returncode == 0, ready.stdout
    assert "not ready" not in ready.stdout
    unquoted = _gate(duckdb_scenarios, str(scenarios.READY_BY_COUNT.game_date))
    assert unquoted.returncode == 0, unquoted.stdout
    not_ready = _gate(duckdb_scenarios, f'"{scenarios.NOT_READY.game_date}"')
    assert not_ready.returncode == 1
    assert "assert_phase4_ready" in not_ready.stdout


@pytest.mark.parametrize("spec", [scenarios.NOT_READY, scenarios.CRITICAL], ids=str)
def test_a_failing_gate_prints_why(duckdb_scenarios, spec):
    """dbt's console names the counts and the thresholds the mart applied."""
    wh = connect(duckdb_scenarios)
    try:
        (mart,) = wh.query(
            "select * from nba_orchestration.fct_phase4_readiness where game_date = @game_date",
            {"game_date": spec.game_date},
        )
    finally:
        wh.close()
    counts = spec.counts()
    assert (mart["players_ready"], mart["players_expected"]) == (counts.ready, counts.expected)
    assert mart["is_ready"] is False
    pct = mart["ready_pct_threshold"]
    needed = math.ceil(pct * counts.expected / 100)
    reason = (
        f"Phase 4 not ready for {spec.game_date}: {counts.ready} of {counts.expected}"
        f" expected players ready; needs {pct:g} % ({needed})"
        f" or {mart['ready_count_threshold']} ready"
    )
    if counts.ready < mart["critical_ready_count"]:
        reason += f"; critical: under {mart['critical_ready_count']} ready"

    result = _gate(duckdb_scenarios, str(spec.game_date))

    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "Phase 4 not ready" in line]
    assert len(lines) == 1, result.stdout
    assert lines[0].endswith(reason), (lines[0], reason)


def test_a_game_day_without_slate_says_so(duckdb_scenarios):
    day = scenarios.NO_PHASE3.game_date
    result = _gate(duckdb_scenarios, str(day))
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"Phase 4 not ready for {day}: 2 games scheduled but no Phase 3 slate for this date"
        in result.stdout
    )


@pytest.mark.parametrize(
    "bad", ['"2026-02-30"', '"2026-02-29"', '"2026-13-01"', "20261128", '"2026-11-28x"']
)
def test_the_gate_refuses_a_bad_date_in_one_line(duckdb_scenarios, bad):
    result = _gate(duckdb_scenarios, bad)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    messages = [line for line in output.splitlines() if "game_date must be" in line]
    assert messages == [
        f"  game_date must be a calendar date YYYY-MM-DD, got: {bad.strip(chr(34))}"
    ], output
    assert "Phase 4 not ready" not in output  # refused before anything ran


def test_a_leap_day_is_a_date(duckdb_scenarios):
    result = _gate(duckdb_scenarios, '"2028-02-29"')
    # Not refused: the gate ran, and a date without a game passes it.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "game_date must be" not in result.stdout + result.stderr
    assert "PASS=1" in result.stdout


@pytest.mark.xfail(
    strict=True,
    reason="dbt parses --vars as YAML before the project loads: an unquoted impossible date"
    " is a YAML timestamp whose datetime.date() raises inside dbt's CLI (a traceback);"
    " the README says to quote the date",
)
def test_an_unquoted_impossible_date_in_one_line(duckdb_scenarios):
    result = _gate(duckdb_scenarios, "2026-02-30")
    assert "Traceback" not in result.stdout + result.stderr


def test_rebuild_keeps_what_the_dispatcher_wrote(tmp_path):
    """The orchestration tables are incremental and never fully refreshed."""
    from dispatcher.config import Settings
    from dispatcher.sandbox.load import write_duckdb
    from dispatcher.sandbox.slate import generate_slate

    settings = Settings(duckdb_path=tmp_path / "w.duckdb", dbt_target_path=tmp_path / "target")
    slate = generate_slate(scenarios.READY)
    write_duckdb(settings.duckdb_path, slate)
    dbt.build(settings, vars={"as_of": scenarios.AS_OF})
    write_duckdb(settings.duckdb_path, slate, include_ledger=True)
    dbt.run_dbt(settings, ["build", "--full-refresh"], vars={"as_of": scenarios.AS_OF})
    wh = connect(settings)
    try:
        rows = wh.query(
            "select count(*) as n from nba_orchestration.request_ledger"
            " where game_date = @game_date",
            {"game_date": scenarios.READY.game_date},
        )
    finally:
        wh.close()
    assert rows[0]["n"] == len(slate.ledger) > 0


def test_parse_for_bigquery_needs_no_credentials(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GOOGLE_", "CLOUDSDK_", "DISPATCHER_"))
    }
    env["HOME"] = str(tmp_path)  # no gcloud ADC file either
    result = subprocess.run(
        [
            DBT, "parse", "--target", "bigquery",
            "--project-dir", str(ROOT), "--profiles-dir", str(ROOT),
            "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"),
        ],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "target" / "manifest.json").exists()


def test_every_model_has_one_primary_key_test_a_description_and_documented_columns(
    duckdb_scenarios,
):
    """dbt-project-evaluator's testing and documentation rules, checked against the
    columns the models really have in the built warehouse."""
    manifest = json.loads((duckdb_scenarios.dbt_target_path / "manifest.json").read_text())
    nodes = manifest["nodes"].values()
    models = {n["unique_id"]: n for n in nodes if n["resource_type"] == "model"}
    generic = [
        (n["test_metadata"]["name"], n.get("attached_node"))
        for n in nodes
        if n["resource_type"] == "test" and n.get("test_metadata")
    ]
    keyed = [model for name, model in generic if name == "primary_key"]
    assert sorted(keyed) == sorted(models), "one primary_key test per model"
    assert not {name for name, _ in generic} & {"unique", "unique_combination_of_columns"}

    wh = connect(duckdb_scenarios)
    try:
        rows = wh.query(
            "select table_name, column_name from information_schema.columns"
            " where table_schema = 'nba_orchestration'"
        )
    finally:
        wh.close()
    actual: dict[str, set[str]] = {}
    for row in rows:
        actual.setdefault(row["table_name"], set()).add(row["column_name"])
    for model in models.values():
        name = model["name"]
        assert model["description"].strip(), f"{name} has no description"
        documented = {c for c, column in model["columns"].items() if column["description"].strip()}
        assert documented == actual[name], name
