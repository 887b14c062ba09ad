"""Environment and file errors are one line naming what to fix, never a traceback
(unless -v asks for it): the installed `dispatcher`, as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DISPATCHER = Path(sys.executable).with_name("dispatcher")
DATE = ["--game-date", "2026-11-28"]


def _run(tmp_path: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    environ.update(env)
    return subprocess.run(
        [str(DISPATCHER), *args], cwd=tmp_path, env=environ,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _cases(tmp_path: Path) -> list[tuple[str, list[str], dict[str, str], int, str]]:
    (tmp_path / "text.duckdb").write_text("not a warehouse\n")
    (tmp_path / "dir.duckdb").mkdir()
    missing = str(tmp_path / "missing.duckdb")
    # Checked before the warehouse is opened (it does not exist here), so before any claim.
    no_key = {"DISPATCHER_BIGQUERY_KEYFILE": str(tmp_path / "no-key.json"),
              "DISPATCHER_TRANSPORT": "pubsub", "DISPATCHER_GCP_PROJECT": "nba-props",
              "DISPATCHER_DUCKDB_PATH": missing}  # fmt: skip
    no_key_says = f"DISPATCHER_BIGQUERY_KEYFILE: no such file: {tmp_path / 'no-key.json'}"
    return [
        ("missing file", ["retry", *DATE], {"DISPATCHER_DUCKDB_PATH": missing}, 1, missing),
        ("missing file, status", ["status", *DATE], {"DISPATCHER_DUCKDB_PATH": missing}, 1,
         missing),
        ("a text file", ["plan", *DATE],
         {"DISPATCHER_DUCKDB_PATH": str(tmp_path / "text.duckdb")}, 1, "text.duckdb"),
        ("a directory", ["trigger", *DATE],
         {"DISPATCHER_DUCKDB_PATH": str(tmp_path / "dir.duckdb")}, 1, "dir.duckdb"),
        ("demo into a missing directory", ["demo"],
         {"DISPATCHER_DUCKDB_PATH": str(tmp_path / "no" / "such" / "w.duckdb")}, 1,
         "no/such/w.duckdb"),
        ("timeout not a number", ["retry", *DATE], {"DISPATCHER_PUBLISH_TIMEOUT": "abc"}, 2,
         "DISPATCHER_PUBLISH_TIMEOUT"),
        ("timeout negative", ["retry", *DATE], {"DISPATCHER_PUBLISH_TIMEOUT": "-3"}, 2,
         "DISPATCHER_PUBLISH_TIMEOUT"),
        ("bigquery with the local outbox", ["retry", *DATE],
         {"DISPATCHER_WAREHOUSE": "bigquery", "DISPATCHER_GCP_PROJECT": "nba-props"}, 2,
         "DISPATCHER_TRANSPORT=pubsub"),
        ("pubsub without a project", ["retry", *DATE], {"DISPATCHER_TRANSPORT": "pubsub"}, 2,
         "DISPATCHER_GCP_PROJECT"),
        ("worker on pubsub without a project", ["worker", "--source", "pubsub"], {}, 1,
         "DISPATCHER_GCP_PROJECT"),
        ("keyfile missing", ["trigger", *DATE], no_key, 2, no_key_says),
        ("keyfile missing, worker", ["worker", "--source", "pubsub"], no_key, 2, no_key_says),
        ("keyfile missing, config", ["config"], no_key, 2, no_key_says),
    ]  # fmt: skip


CASE_NAMES = [
    "missing file", "missing file, status", "a text file", "a directory",
    "demo into a missing directory", "timeout not a number", "timeout negative",
    "bigquery with the local outbox", "pubsub without a project",
    "worker on pubsub without a project", "keyfile missing", "keyfile missing, worker",
    "keyfile missing, config",
]  # fmt: skip


def test_bigquery_with_the_local_outbox_leaves_no_duckdb_file_behind(tmp_path):
    _run(tmp_path, ["retry", *DATE], DISPATCHER_WAREHOUSE="bigquery",
         DISPATCHER_GCP_PROJECT="nba-props")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", CASE_NAMES)
def test_error_is_one_line_naming_what_to_fix(tmp_path, name):
    _, args, env, code, names = next(case for case in _cases(tmp_path) if case[0] == name)
    out = _run(tmp_path, args, **env)

    assert out.returncode == code, out.stderr[-2000:]
    assert "Traceback" not in out.stderr + out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out.stderr
    assert names in errors[0]
    # The environment is what to fix, not the command line: no usage text around it.
    assert "Usage:" not in out.stderr, out.stderr


def test_verbose_shows_the_traceback(tmp_path):
    missing = str(tmp_path / "missing.duckdb")
    out = _run(tmp_path, ["-v", "retry", *DATE], DISPATCHER_DUCKDB_PATH=missing)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and missing in out.stderr
