"""Row 2: the whole `dispatcher trigger --game-date D --json` process, against the import
floor of any process that reads DuckDB and publishes to Pub/Sub."""

from __future__ import annotations

import sys

from ..config import GAME_DATE, PLAYERS_PENDING
from ..infra import BenchError, closing_log, last_json
from ..session import Session, interleave
from ..table import RowResult, StageRun
from .common import cli_on_copy, floor_process, import_profile, process_split

ROW = 2
GOAL_SECONDS = 2.0
FLOOR = [sys.executable, "-c", "import duckdb, google.cloud.pubsub_v1"]
ARGS = ["trigger", "--game-date", GAME_DATE.isoformat(), "--json"]


def run(s: Session) -> list[RowResult]:
    template = s.warehouse("one-date")
    logs: list[StageRun] = []

    def trigger() -> float:
        wall, done = cli_on_copy(s, template, "row2", ARGS)
        published = last_json(done.stdout)["requests_published"]
        if published != PLAYERS_PENDING:
            raise BenchError(f"dispatcher trigger published {published}")
        logs.append(StageRun.from_log(closing_log(done.stderr)))
        return wall

    floor = floor_process(s, FLOOR)
    trigger()  # warm-up: page cache, .pyc
    floor()
    logs.clear()
    measured, baseline, notes = interleave("row 2", s.runs[ROW], trigger, floor)
    if s.args.profile:
        _, done = cli_on_copy(s, template, "row2-profile", ARGS, python_flags=["-X", "importtime"])
        import_profile(s, ROW, done.stderr, "one `dispatcher trigger`")
    return [
        RowResult(
            row=ROW,
            title=f"`dispatcher trigger --game-date D --json` process, {PLAYERS_PENDING} requests",
            measured=measured,
            baseline=baseline,
            baseline_label="import floor (duckdb + pubsub_v1)",
            goal_kind="absolute",
            goal=GOAL_SECONDS,
            notes=[
                *notes,
                process_split(measured, logs, "the dispatch itself"),
                "measured: fresh copy of the one-date warehouse per run (copied before the "
                "clock starts), DISPATCHER_TRANSPORT=pubsub; checked: "
                f"{PLAYERS_PENDING} published",
                "baseline: `python -c 'import duckdb, google.cloud.pubsub_v1'`, the import "
                "floor any process that reads DuckDB and publishes to Pub/Sub pays",
            ],
        )
    ]
