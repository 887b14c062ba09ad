"""Row 5: the whole `dispatcher plan --game-date D --json` process (DuckDB, local
transport), against `python -c 'import duckdb'`."""

from __future__ import annotations

import sys

from ..config import GAME_DATE, PLAYERS_PENDING
from ..infra import BenchError, closing_log, last_json
from ..session import Session, interleave
from ..table import RowResult, StageRun
from .common import cli_on_copy, floor_process, import_profile, process_split

ROW = 5
GOAL_SECONDS = 1.5
FLOOR = [sys.executable, "-c", "import duckdb"]
ARGS = ["plan", "--game-date", GAME_DATE.isoformat(), "--json"]


def run(s: Session) -> list[RowResult]:
    template = s.warehouse("one-date")
    logs: list[StageRun] = []

    def plan() -> float:
        wall, done = cli_on_copy(s, template, "row5", ARGS, transport="local")
        payload = last_json(done.stdout)
        would = sum(1 for item in payload["plan"] if item["action"] == "publish")
        if payload["outcome"] != "would_publish" or would != PLAYERS_PENDING:
            raise BenchError(f"dispatcher plan: {payload['outcome']}, would publish {would}")
        logs.append(StageRun.from_log(closing_log(done.stderr)))
        return wall

    floor = floor_process(s, FLOOR)
    plan()  # warm-up: page cache, .pyc
    floor()
    logs.clear()
    measured, baseline, notes = interleave("row 5", s.runs[ROW], plan, floor)
    if s.args.profile:
        _, done = cli_on_copy(
            s, template, "row5-profile", ARGS, transport="local", python_flags=["-X", "importtime"]
        )
        import_profile(s, ROW, done.stderr, "one `dispatcher plan`")
    return [
        RowResult(
            row=ROW,
            title=f"`dispatcher plan --game-date D --json` process, DuckDB, {PLAYERS_PENDING} "
            "pending, local transport",
            measured=measured,
            baseline=baseline,
            baseline_label="`python -c 'import duckdb'`",
            goal_kind="absolute",
            goal=GOAL_SECONDS,
            notes=[
                *notes,
                process_split(
                    measured,
                    logs,
                    "the plan itself (readiness, coverage and dispatch-state reads, run-log write)",
                ),  # fmt: skip
                "measured: fresh copy of the one-date warehouse per run (copied before the "
                f"clock starts), DISPATCHER_TRANSPORT=local; checked: {PLAYERS_PENDING} "
                "`publish` actions",
                "baseline: `python -c 'import duckdb'`, the import floor of a process that "
                "reads the DuckDB warehouse",
            ],
        )
    ]
