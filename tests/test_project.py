"""The README's promises: two set-up commands, CI runs the test one verbatim; CLI basics."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from dispatcher.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [block.strip() for block in blocks if block.strip().startswith("python3 -m venv")]


def test_readme_has_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)
    assert commands[0].endswith("dispatcher demo")
    assert commands[1].endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert _readme_commands()[1] in ci_lines


def test_every_command_has_help():
    runner = CliRunner()
    for name, command in cli.commands.items():
        assert command.help, name
        result = runner.invoke(cli, [name, "-h"], catch_exceptions=False)
        assert result.exit_code == 0
        assert "Usage:" in result.output


def test_help_starts_without_heavy_imports():
    code = (
        "import sys; from dispatcher.cli import cli\n"
        "heavy = ('duckdb', 'dbt', 'google.cloud.bigquery', 'google.cloud.pubsub_v1',\n"
        "         'flask', 'werkzeug', 'gunicorn', 'dispatcher.serve')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""


def test_bad_game_date_is_a_usage_error():
    result = CliRunner().invoke(cli, ["demo", "--game-date", "2026-02-30"])
    assert result.exit_code == 2
    assert "not a date" in result.output


def _demo_env(tmp_path) -> dict[str, str]:
    return {
        "DISPATCHER_DUCKDB_PATH": str(tmp_path / "w.duckdb"),
        "DISPATCHER_DBT_TARGET_PATH": str(tmp_path / "target"),
        "DISPATCHER_WAREHOUSE": "duckdb",
        "DISPATCHER_TRANSPORT": "local",
    }


def _demo_figures(payload: dict) -> tuple:
    return (
        payload["first_wave"]["requests_published"],
        payload["second_wave"]["requests_published"],
        payload["predicted_players"],
        payload["status"]["outcome"],
        payload["coverage"]["players_predicted"],
        payload["coverage"]["players_expected"],
        payload["coverage"]["coverage_pct"],
    )


def _marts_after(tmp_path, game_date: dt.date) -> tuple[dict, dict]:
    from dispatcher import marts
    from dispatcher.config import Settings
    from dispatcher.warehouse import connect

    warehouse = connect(Settings.from_env(_demo_env(tmp_path)))
    try:
        return marts.coverage(warehouse, game_date), marts.latency(warehouse, game_date)
    finally:
        warehouse.close()


def test_demo_on_the_embedded_default_ends_at_full_coverage(tmp_path):
    from dispatcher import display
    from dispatcher.sandbox.demo import COVERAGE_COLUMNS, LATENCY_COLUMNS, next_game_date

    runner = CliRunner()
    before = next_game_date()
    result = runner.invoke(cli, ["demo"], env=_demo_env(tmp_path), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "[7/7] 07:00 status check: ok, 378 of 378 predicted" in result.output
    # By default the game date is the next whose 07:00 PT deadline is ahead.
    game_date = dt.date.fromisoformat(re.search(r"sample slate for (\S+):", result.output)[1])
    assert game_date in {before, next_game_date()}
    # What it prints is what the marts hold.
    coverage, latency = _marts_after(tmp_path, game_date)
    assert display.table([coverage], COVERAGE_COLUMNS) in result.output
    assert display.record(latency, LATENCY_COLUMNS) in result.output
    seconds = (latency["first_requested_at"] - latency["phase4_ready_at"]).total_seconds()
    assert f"Phase 4 ready -> first request: {seconds:.0f} s" in result.output
    assert "\nSLA met: yes, last prediction " in result.output
    # The story they tell: dispatched within seconds of Phase 4 ready, SLA met.
    assert 0 <= seconds < 60 and latency["minutes_to_first_request"] < 1
    assert latency["is_sla_met"] is True and latency["latency_alert_level"] == "ok"
    assert latency["first_requested_at"] < latency["sla_deadline_at"]
    # The alerts: wave 1 leaves 15 % of the slate not ready (partial), wave 2 clears it.
    assert ("Alerts sent (log channel; Slack and email when configured): partial_dispatch"
            " warning new, partial_dispatch warning resolved") in result.output  # fmt: skip
    # It ends by writing the report and saying where.
    report = Path(re.search(r"\nReport: (\S+) \(open it", result.output)[1])
    assert report.is_file() and f"Latest game day: {game_date}" in report.read_text()

    # A second run on the same date tells the same story.
    args = ["demo", "--game-date", game_date.isoformat(), "--json"]
    again = runner.invoke(cli, args, env=_demo_env(tmp_path), catch_exceptions=False)
    assert again.exit_code == 0, again.output
    payload = json.loads(again.stdout.strip().splitlines()[-1])
    assert _demo_figures(payload) == (321, 57, 378, "ok", 378, 378, 100.0)
    story = payload["latency"]
    assert story["first_trigger_source"] == "pubsub"
    assert story["minutes_to_first_request"] < 1 and story["is_sla_met"] is True
    assert story["first_requested_at"] < story["sla_deadline_at"]  # same-format UTC text


def test_demo_on_the_pubsub_emulator(tmp_path, pubsub_emulator, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    env = {**_demo_env(tmp_path), "DISPATCHER_GCP_PROJECT": "demo-test"}
    result = CliRunner().invoke(
        cli, ["demo", "--game-date", "2026-11-28", "--transport", "pubsub", "--json"],
        env=env, catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert _demo_figures(payload) == (321, 57, 378, "ok", 378, 378, 100.0)


def test_demo_pubsub_without_emulator_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    result = CliRunner().invoke(cli, ["demo", "--transport", "pubsub"], env=_demo_env(tmp_path))
    assert result.exit_code == 1
    assert "PUBSUB_EMULATOR_HOST" in result.output
