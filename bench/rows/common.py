"""What several rows do alike: dispatch in-process on a fresh warehouse copy, run the
`dispatcher` CLI on one, and profile either."""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..infra import checked, dispatcher_command, quiet_stderr, run_process, timed, warehouse_copy
from ..profiling import cprofile_text, import_time_summary
from ..session import Session
from ..table import StageRun, format_seconds, stages_summary
from ..warehouses import settings_for


def dispatch_on_copy(
    s: Session, template: Path, name: str, call: Callable[[Any], Any]
) -> tuple[float, Any]:
    """`call(Dispatcher(...))` on a fresh copy of the template (copied before the clock
    starts), its logs sent to the work directory; (seconds, the RunResult)."""
    from dispatcher.dispatch import Dispatcher

    with warehouse_copy(template, s.workdir, name) as path:
        dispatcher = Dispatcher(settings_for(path))
        with quiet_stderr(s.dispatcher_log):
            return timed(lambda: call(dispatcher))


def profile_dispatch(
    s: Session, row: int, template: Path, call: Callable[[Any], Any], what: str
) -> None:
    """--profile: cProfile of one `call(Dispatcher(...))` on a fresh copy."""
    from dispatcher.dispatch import Dispatcher

    with warehouse_copy(template, s.workdir, f"row{row}-profile") as path:
        dispatcher = Dispatcher(settings_for(path))
        with quiet_stderr(s.dispatcher_log):
            text = cprofile_text(lambda: call(dispatcher))
    s.add_profile(row, f"cProfile of {what} (by tottime):\n{text}")


def cli_on_copy(
    s: Session,
    template: Path,
    name: str,
    args: Sequence[str],
    *,
    transport: str = "pubsub",
    python_flags: Sequence[str] = (),
) -> tuple[float, subprocess.CompletedProcess]:
    """The whole `dispatcher ARGS` process on a fresh copy of the template; (wall seconds,
    the completed process), a non-zero exit raised. `python_flags` (e.g. -X importtime)
    run the console script under this interpreter with them."""
    command = dispatcher_command()
    if python_flags:
        command = [sys.executable, *python_flags, *command]
    with warehouse_copy(template, s.workdir, name) as path:
        wall, done = run_process([*command, *args], env=s.cli_env(path, transport), cwd=s.workdir)
    return wall, checked(done, f"dispatcher {' '.join(args)}")


def import_profile(s: Session, row: int, stderr: str, what: str) -> None:
    s.add_profile(row, f"`-X importtime` of {what}:\n{import_time_summary(stderr)}")


def floor_process(s: Session, argv: Sequence[str]) -> Callable[[], float]:
    """A baseline: the wall seconds of one `argv` process."""
    return lambda: run_process(argv, env=s.env, cwd=s.workdir)[0]


def process_split(measured: Sequence[float], logs: Sequence[StageRun], what: str) -> str:
    """How a CLI process's wall time splits: the command itself (duration_ms of its
    closing log line) and the rest; then the command's stages and round trips."""
    command = statistics.median(run.wall_ms for run in logs) / 1000
    return (
        f"of the wall time, {what} (duration_ms of its closing log line) is "
        f"{format_seconds(command)} (median); the rest — interpreter start, imports, "
        f"Settings, output, exit — is {format_seconds(statistics.median(measured) - command)}; "
        f"its stages (closing log line, medians): {stages_summary(logs)}"
    )
