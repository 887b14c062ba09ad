"""The README's promises: two set-up commands, CI runs the test one verbatim; CLI basics."""

from __future__ import annotations

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
        "heavy = ('duckdb', 'dbt', 'google.cloud.bigquery', 'google.cloud.pubsub_v1')\n"
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


def test_demo_on_the_embedded_default(tmp_path):
    runner = CliRunner()
    env = {
        "DISPATCHER_DUCKDB_PATH": str(tmp_path / "w.duckdb"),
        "DISPATCHER_DBT_TARGET_PATH": str(tmp_path / "target"),
        "DISPATCHER_WAREHOUSE": "duckdb",
    }
    result = runner.invoke(
        cli, ["demo", "--game-date", "2026-11-28"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "fct_phase4_readiness" in result.output
    assert "players_expected   378" in result.output
    states = "Players by state: in_flight 25, not_ready 26, pending 221, predicted 106"
    assert states in result.output
