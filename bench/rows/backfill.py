"""Row 3: `Dispatcher.backfill` over 100 dates × 450 pending in-process, against the same
45,000 messages through one raw batched PublisherClient."""

from __future__ import annotations

import statistics

from ..config import (
    BACKFILL_DATES,
    PLAYERS_PENDING,
    RAW_BATCH_MAX_LATENCY,
    RAW_BATCH_MAX_MESSAGES,
    backfill_dates,
)
from ..infra import progress, timed
from ..publishers import pending_messages, publish_batched
from ..session import Session, check_dispatch, interleave
from ..table import RowResult, StageRun, format_seconds, render_stage_table
from .common import dispatch_on_copy, profile_dispatch

ROW = 3
GOAL_RATIO = 1.3
#: Stops repeating once another pair of runs would take the row past this many seconds.
BUDGET_SECONDS = 900.0


def run(s: Session) -> list[RowResult]:
    template = s.warehouse("backfill")
    dates = backfill_dates()
    expected = PLAYERS_PENDING * BACKFILL_DATES
    messages = pending_messages(template, s.workdir, dates, expected)
    stage_runs: list[StageRun] = []

    def backfill_all(dispatcher):
        return dispatcher.backfill(dates[0], dates[-1])

    def backfill() -> float:
        elapsed, result = dispatch_on_copy(s, template, "row3", backfill_all)
        check_dispatch(result, expected, f"backfill {dates[0]} … {dates[-1]}")
        stage_runs.append(StageRun.of(elapsed, result))
        return elapsed

    def raw() -> float:
        return timed(lambda: publish_batched(messages))[0]

    progress("row 3: warm-up (1,000 raw messages)")
    publish_batched(messages[:1000])
    measured, baseline, notes = interleave(
        "row 3", s.runs[ROW], backfill, raw, budget_seconds=BUDGET_SECONDS
    )
    raw_median, goal = statistics.median(baseline), GOAL_RATIO * statistics.median(baseline)
    over = statistics.median(measured) - goal
    s.add_section(
        ROW,
        "## Row 3: where the backfill's time goes (`RunResult.stages`, mean over the runs)",
        render_stage_table(stage_runs, per="backfill", per_part=("date", BACKFILL_DATES))
        + f"\n\n`publish` is submitting each chunk's messages, `publish_wait` waiting for the "
        f"previous chunk's acks (chunks overlap). Against the goal: the raw batched publish "
        f"of the same {expected:,} takes {format_seconds(raw_median)} (median), so "
        f"{GOAL_RATIO:g}× is {format_seconds(goal)}; the backfill's median is "
        f"{format_seconds(abs(over))} {'over' if over > 0 else 'under'} it.",
    )
    if s.args.profile:
        profile_dispatch(s, ROW, template, backfill_all, "backfill() over the 100 dates")
    return [
        RowResult(
            row=ROW,
            title=f"`Dispatcher.backfill`, {BACKFILL_DATES} dates = {expected:,} requests "
            "(in-process)",
            measured=measured,
            baseline=baseline,
            baseline_label=f"raw batched publish of the same {expected:,}",
            goal_kind="ratio",
            goal=GOAL_RATIO,
            notes=[
                *notes,
                f"measured: Dispatcher.backfill over the {BACKFILL_DATES} dates (10 dates per "
                "claim and publish), on a fresh copy of the 100-date warehouse (copy made "
                "before the clock starts); its stages are read from the RunResult",
                f"baseline: one raw PublisherClient(BatchSettings(max_messages="
                f"{RAW_BATCH_MAX_MESSAGES}, max_latency={RAW_BATCH_MAX_LATENCY})), all "
                f"{expected:,} published, futures gathered at the end",
            ],
        )
    ]
