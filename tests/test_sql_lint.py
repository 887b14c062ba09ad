"""The dbt project's SQL is lint-clean under the repo's `.sqlfluff` (house SQL style)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_TIMEOUT = 300


def _sql_files() -> set[str]:
    """The files sqlfluff should lint: models and singular tests (macros are ignored)."""
    project = ROOT / "dbt_project"
    return {
        path.relative_to(ROOT).as_posix()
        for folder in ("models", "tests")
        for path in (project / folder).rglob("*.sql")
    }


def test_dbt_sql_is_lint_clean(tmp_path):
    env = dict(os.environ)
    env.pop("DBT_ENGINE_TARGET_PATH", None)
    env.update(
        {
            # The dbt templater opens the `local` (DuckDB) target: a scratch file.
            "DISPATCHER_DUCKDB_PATH": str(tmp_path / "lint.duckdb"),
            # dbt's partial-parse state goes here, not into the repo's target/.
            "DBT_TARGET_PATH": str(tmp_path / "target"),
            "DBT_LOG_PATH": str(tmp_path / "logs"),
        }
    )
    # A subprocess: the dbt templater sets dbt's process-wide flags and adapter, which
    # the in-process dbt runs of other tests (dispatcher.dbt) depend on.
    result = subprocess.run(
        [sys.executable, "-m", "sqlfluff", "lint", "dbt_project", "--format", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=LINT_TIMEOUT,
    )
    assert result.returncode in (0, 1), f"sqlfluff failed to run:\n{result.stderr}"
    report = json.loads(result.stdout)

    problems = [
        f"{entry['filepath']}:{v['start_line_no']}:{v['start_line_pos']}: "
        f"{v['code']} {v['description']}"
        for entry in report
        for v in entry["violations"]
    ]
    assert not problems, "sqlfluff violations:\n" + "\n".join(problems)
    assert result.returncode == 0, result.stderr

    linted = {Path(entry["filepath"]).as_posix() for entry in report}
    assert linted == _sql_files(), "sqlfluff skipped or added files"
