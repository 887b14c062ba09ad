"""Run the project's dbt commands in-process (a cold dbt start costs seconds)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .config import Settings

_lock = threading.Lock()


class DbtError(RuntimeError):
    """dbt failed, or a test it ran failed."""


@dataclass(frozen=True)
class DbtResult:
    success: bool
    command: list[str]
    #: (unique_id, status) per node dbt ran.
    statuses: list[tuple[str, str]]

    def failures(self) -> list[str]:
        bad = {"error", "fail", "runtime error"}
        return [uid for uid, status in self.statuses if status.lower() in bad]


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def run_dbt(
    settings: Settings,
    command: Sequence[str],
    *,
    vars: Mapping[str, Any] | None = None,
    quiet: bool = True,
    check: bool = True,
) -> DbtResult:
    """Run one dbt command (e.g. ``["build"]``) against the settings' warehouse."""
    import json

    from dbt.cli.main import dbtRunner

    project_dir = str(settings.dbt_project_dir)
    args = [
        *command,
        "--project-dir", project_dir,
        "--profiles-dir", project_dir,
        "--target", settings.dbt_target,
    ]
    if settings.dbt_target_path is not None:
        args += ["--target-path", str(settings.dbt_target_path)]
        args += ["--log-path", str(settings.dbt_target_path / "logs")]
    if vars:
        args += ["--vars", json.dumps(dict(vars), default=str)]
    if quiet:
        args += ["--quiet"]
    # dbt keeps global state: one invocation at a time per process.
    with _lock, _environment(settings.dbt_env()):
        try:
            outcome = dbtRunner().invoke(args)
        finally:
            if settings.warehouse == "duckdb":
                _release_duckdb_file()
    # build/test/run return a RunExecutionResult of node results; parse returns a manifest.
    nodes = getattr(outcome.result, "results", None) or []
    statuses = [
        (getattr(getattr(node, "node", None), "unique_id", "?"), str(getattr(node, "status", "")))
        for node in nodes
    ]
    result = DbtResult(success=outcome.success, command=args, statuses=statuses)
    if check and not outcome.success:
        detail = ", ".join(result.failures()) or str(outcome.exception or "see dbt log")
        raise DbtError(f"dbt {' '.join(command)} failed: {detail}")
    return result


def _release_duckdb_file() -> None:
    """dbt-duckdb keeps its connection open for the life of the process; close it so
    that other processes (a second dispatcher, a worker) can open the file."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    environment = DuckDBConnectionManager._ENV
    if environment is not None:
        environment.close()
    DuckDBConnectionManager.close_all_connections()


def build(settings: Settings, *, vars: Mapping[str, Any] | None = None) -> DbtResult:
    """``dbt build``: create or refresh every model and run every test but the gate."""
    return run_dbt(settings, ["build"], vars=vars)


def readiness_gate(settings: Settings, game_date: str) -> DbtResult:
    """``dbt test --select tag:readiness_gate`` for one date; success means ready."""
    return run_dbt(
        settings,
        ["test", "--select", "tag:readiness_gate"],
        vars={"game_date": game_date},
        check=False,
    )
