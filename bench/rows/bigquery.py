"""Row 8: warehouse round trips of one `Dispatcher.trigger` of 450 pending players on the
BigQuery API emulator (Pub/Sub emulator transport), read from `RunResult.stages`,
against the floor: `Dispatcher.retry` of the same date right after, nothing pending."""

from __future__ import annotations

import statistics

from ..config import GAME_DATE, PLAYERS_PENDING, slate_spec
from ..infra import BenchError, progress, quiet_stderr, timed
from ..session import Session, check_dispatch, interleave
from ..table import RowResult, StageRun, format_seconds, render_stage_table, stages_summary
from ..warehouses import bigquery_client, bigquery_settings, write_pending_slate

ROW = 8
GOAL_BEFORE_PUBLISH = 2
#: The five of a dispatch without alerting (claim, confirm, coverage, run log, 8a's
#: two before the publish counted once), plus the alert rules' read, their dedup state's
#: read and the alert row written when an alert is decided.
GOAL_TOTAL = 8


def run(s: Session) -> list[RowResult]:
    from dispatcher.dispatch import Dispatcher
    from dispatcher.sandbox.slate import generate_slate

    if s.bigquery_endpoint is None:
        raise BenchError("row 8 needs the BigQuery API emulator")
    settings = bigquery_settings(s.bigquery_endpoint, s.workdir / "bigquery" / "target")
    slate = generate_slate(slate_spec(GAME_DATE))
    triggers: list[StageRun] = []
    floors: list[StageRun] = []

    def dispatch(call, expected: int, what: str) -> StageRun:
        with quiet_stderr(s.dispatcher_log):
            elapsed, result = timed(lambda: call(Dispatcher(settings)))
        check_dispatch(result, expected, what)
        return StageRun.of(elapsed, result)

    with bigquery_client(s.bigquery_endpoint) as client:

        def trigger() -> float:
            triggers.append(dispatch(lambda d: d.trigger(GAME_DATE), PLAYERS_PENDING, "trigger"))
            return triggers[-1].wall_ms / 1000

        def floor() -> float:
            """The retry finds everyone in flight; then the slate's ledger state is
            written again (not timed), so the next trigger has 450 pending."""
            floors.append(dispatch(lambda d: d.retry(GAME_DATE), 0, "retry, nothing pending"))
            write_pending_slate(client, slate)
            return floors[-1].wall_ms / 1000

        progress("row 8: warm-up (one trigger and one retry on the BigQuery API emulator)")
        trigger()
        floor()
        triggers.clear()
        floors.clear()
        interleave("row 8", s.runs[ROW], trigger, floor)
    s.add_section(
        ROW,
        "## Row 8: where one trigger's time goes on the BigQuery API emulator "
        "(`RunResult.stages`, mean over the runs)",
        render_stage_table(triggers, per="trigger"),
    )
    before = [float(run.round_trips["before_publish"]) for run in triggers]
    total = [float(run.round_trips["total"]) for run in triggers]
    floor_total = [float(run.round_trips["total"]) for run in floors]
    wall = statistics.median(run.wall_ms for run in triggers) / 1000
    floor_wall = statistics.median(run.wall_ms for run in floors) / 1000
    notes = [
        f"measured: `RunResult.stages.round_trips()` of Dispatcher(settings).trigger(D) "
        f"with warehouse=bigquery on the BigQuery API emulator, {PLAYERS_PENDING} pending, "
        f"transport=pubsub; trigger wall time {format_seconds(wall)} (median: "
        + ", ".join(format_seconds(run.wall_ms / 1000) for run in triggers)
        + f"); stages: {stages_summary(triggers)}",
        "baseline: Dispatcher.retry(D) right after each trigger, when nothing is pending "
        "(every player in flight): the statements of a run that claims and publishes "
        f"nothing; wall time {format_seconds(floor_wall)} (median); stages: "
        f"{stages_summary(floors)}",
        "between runs the slate is written again with write_bigquery(..., "
        "include_ledger=True), so each trigger starts with 450 pending (not timed)",
    ]
    return [
        RowResult(
            row=ROW,
            label="8a",
            title="BigQuery API emulator: warehouse round trips of `trigger` (450 pending) "
            "before the first publish",
            measured=before,
            baseline=floor_total,
            baseline_label="`retry`, nothing pending: all its statements",
            goal_kind="absolute",
            goal=GOAL_BEFORE_PUBLISH,
            unit="statements",
            notes=notes,
        ),
        RowResult(
            row=ROW,
            label="8b",
            title="BigQuery API emulator: warehouse round trips of `trigger` (450 pending) in all",
            measured=total,
            baseline=floor_total,
            baseline_label="`retry`, nothing pending",
            goal_kind="absolute",
            goal=GOAL_TOTAL,
            unit="statements",
        ),
    ]
