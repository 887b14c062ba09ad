"""Row 7: peak RSS of the whole `dispatcher backfill` process over 100 dates (45,000
requests to the Pub/Sub emulator), against the peak RSS of `dispatcher --help`."""

from __future__ import annotations

import sys

from ..config import BACKFILL_DATES, PLAYERS_PENDING, backfill_dates
from ..infra import (
    BenchError,
    checked,
    closing_log,
    dispatcher_command,
    last_json,
    peak_rss_run,
    warehouse_copy,
)
from ..session import Session, interleave
from ..table import RowResult, StageRun, format_seconds, stages_summary

ROW = 7
GOAL_MB = 300.0
#: A backfill process that runs longer than this is killed (and the bench fails).
TIMEOUT_SECONDS = 900.0
FLOOR = [sys.executable, "-c", "import duckdb, google.cloud.pubsub_v1"]


def run(s: Session) -> list[RowResult]:
    template = s.warehouse("backfill")
    dates = backfill_dates()
    expected = PLAYERS_PENDING * BACKFILL_DATES
    command = dispatcher_command()
    argv = [*command, "backfill", "--start", dates[0].isoformat(),
            "--end", dates[-1].isoformat(), "--json"]  # fmt: skip
    walls: list[float] = []
    floor: list[float] = []
    logs: list[StageRun] = []

    def backfill() -> float:
        with warehouse_copy(template, s.workdir, "row7") as path:
            wall, peak, done = peak_rss_run(
                argv, env=s.cli_env(path), cwd=s.workdir, timeout=TIMEOUT_SECONDS
            )
        published = last_json(checked(done, "dispatcher backfill").stdout)["requests_published"]
        if published != expected:
            raise BenchError(f"dispatcher backfill published {published} of {expected}")
        logs.append(StageRun.from_log(closing_log(done.stderr)))
        walls.append(wall)
        floor.append(peak_rss_run(FLOOR, env=s.env, cwd=s.workdir)[1])
        return peak

    def help_peak() -> float:
        _, peak, done = peak_rss_run([*command, "--help"], env=s.env, cwd=s.workdir)
        checked(done, "dispatcher --help")
        return peak

    measured, baseline, notes = interleave("row 7", s.runs[ROW], backfill, help_peak, unit="MB")
    return [
        RowResult(
            row=ROW,
            title=f"peak RSS of `dispatcher backfill --start D1 --end D{BACKFILL_DATES} "
            f"--json`, {expected:,} requests, Pub/Sub emulator",
            measured=measured,
            baseline=baseline,
            baseline_label="`dispatcher --help`",
            goal_kind="absolute",
            goal=GOAL_MB,
            unit="MB",
            notes=[
                *notes,
                "peak RSS = the child's own ru_maxrss from wait4, taken by a small launcher "
                "process so that the bench's own RSS is not inherited (MB = 2^20 bytes); a "
                "fresh copy of the row 3 warehouse per run, env DISPATCHER_DUCKDB_PATH, "
                "DISPATCHER_TRANSPORT=pubsub, DISPATCHER_GCP_PROJECT, PUBSUB_EMULATOR_HOST; "
                f"checked: {expected:,} published",
                f"backfill process wall time: {', '.join(map(format_seconds, walls))}; its "
                f"stages (closing log line, medians): {stages_summary(logs)}",
                "for scale: `python -c 'import duckdb, google.cloud.pubsub_v1'` peaks at "
                + ", ".join(f"{mb:.0f} MB" for mb in floor),
            ],
        )
    ]
