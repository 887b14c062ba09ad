"""Run the project's dbt commands in-process (a cold dbt start costs seconds)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
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


#: ``progress(done, total, node_name, status)``: a node of a dbt run finished.
NodeProgress = Callable[[int, int, str, str], None]


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
    progress: NodeProgress | None = None,
) -> DbtResult:
    """Run one dbt command (e.g. ``["build"]``) against the settings' warehouse.

    ``progress(done, total, node_name, status)`` is called as each node finishes
    (from dbt's threads; its errors are ignored)."""
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
            callbacks = [_node_events(progress)] if progress is not None else []
            outcome = dbtRunner(callbacks=callbacks).invoke(args)
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


def _node_events(progress: NodeProgress) -> Callable[[Any], None]:
    """A dbtRunner callback turning dbt's events into ``progress`` calls: the total from
    the first LogStartLine, one call per NodeFinished."""
    lock = threading.Lock()
    counts = {"done": 0, "total": 0}

    def callback(event: Any) -> None:
        try:
            name = event.info.name
            if name == "LogStartLine":
                with lock:
                    counts["total"] = max(counts["total"], int(event.data.total))
            elif name == "NodeFinished":
                info = event.data.node_info
                with lock:
                    counts["done"] += 1
                    done, total = counts["done"], max(counts["total"], counts["done"])
                progress(done, total, str(info.node_name), str(info.node_status))
        except Exception:  # progress is for people: it never breaks a build
            pass

    return callback


def _release_duckdb_file() -> None:
    """dbt-duckdb keeps its connection open for the life of the process; close it so
    that other processes (a second dispatcher, a worker) can open the file."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    environment = DuckDBConnectionManager._ENV
    if environment is not None:
        environment.close()
    DuckDBConnectionManager.close_all_connections()


def build(
    settings: Settings,
    *,
    vars: Mapping[str, Any] | None = None,
    progress: NodeProgress | None = None,
) -> DbtResult:
    """``dbt build``: create or refresh every model and run every test but the gate."""
    return run_dbt(settings, ["build"], vars=vars, progress=progress)


def readiness_gate(settings: Settings, game_date: str) -> DbtResult:
    """``dbt test --select tag:readiness_gate`` for one date; success means ready."""
    return run_dbt(
        settings,
        ["test", "--select", "tag:readiness_gate"],
        vars={"game_date": game_date},
        check=False,
    )
