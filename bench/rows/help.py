"""Row 4: `dispatcher --help` cold start, a new process each time, against `python -c pass`."""

from __future__ import annotations

import sys

from ..infra import checked, dispatcher_command, run_process
from ..session import Session, interleave
from ..table import RowResult
from .common import floor_process, import_profile

ROW = 4
GOAL_SECONDS = 0.3
FLOOR = [sys.executable, "-c", "pass"]


def run(s: Session) -> list[RowResult]:
    command = [*dispatcher_command(), "--help"]

    def help_() -> float:
        wall, done = run_process(command, env=s.env, cwd=s.workdir)
        checked(done, "dispatcher --help")
        return wall

    floor = floor_process(s, FLOOR)
    help_()  # warm-up: page cache, .pyc
    floor()
    measured, baseline, notes = interleave("row 4", s.runs[ROW], help_, floor)
    if s.args.profile:
        _, done = run_process([sys.executable, "-X", "importtime", *command], env=s.env)
        import_profile(s, ROW, done.stderr, "`dispatcher --help`")
    return [
        RowResult(
            row=ROW,
            title="`dispatcher --help` cold start (new process)",
            measured=measured,
            baseline=baseline,
            baseline_label="`python -c pass`",
            goal_kind="absolute",
            goal=GOAL_SECONDS,
            notes=[
                *notes,
                "one unmeasured warm-up of each first (page cache); .pyc files as installed",
            ],
        )
    ]
