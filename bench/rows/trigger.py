"""Row 1: `Dispatcher.trigger` of 450 pending players in-process, against the same 450
messages published one at a time (the old coordinator)."""

from __future__ import annotations

from ..config import GAME_DATE, PLAYERS_PENDING
from ..infra import progress, timed
from ..publishers import pending_messages, publish_one_at_a_time
from ..session import Session, check_dispatch, interleave
from ..table import RowResult, StageRun, render_stage_table
from .common import dispatch_on_copy, profile_dispatch

ROW = 1
GOAL_SPEEDUP = 20.0


def run(s: Session) -> list[RowResult]:
    template = s.warehouse("one-date")
    messages = pending_messages(template, s.workdir, [GAME_DATE], PLAYERS_PENDING)
    stage_runs: list[StageRun] = []

    def trigger() -> float:
        elapsed, result = dispatch_on_copy(s, template, "row1", lambda d: d.trigger(GAME_DATE))
        check_dispatch(result, PLAYERS_PENDING, f"trigger {GAME_DATE}")
        stage_runs.append(StageRun.of(elapsed, result))
        return elapsed

    def one_at_a_time() -> float:
        return timed(lambda: publish_one_at_a_time(messages))[0]

    progress("row 1: warm-up (one trigger, one baseline message)")
    trigger()
    publish_one_at_a_time(messages[:1])
    stage_runs.clear()
    measured, baseline, notes = interleave("row 1", s.runs[ROW], trigger, one_at_a_time)
    s.add_section(
        ROW,
        "## Row 1: where one trigger's time goes (`RunResult.stages`, mean over the runs)",
        render_stage_table(stage_runs, per="trigger"),
    )
    if s.args.profile:
        profile_dispatch(s, ROW, template, lambda d: d.trigger(GAME_DATE), "one trigger")
    return [
        RowResult(
            row=ROW,
            title=f"`Dispatcher.trigger`, {PLAYERS_PENDING} requests, Pub/Sub emulator "
            "(in-process)",
            measured=measured,
            baseline=baseline,
            baseline_label=f"publishing the same {len(messages)} one at a time",
            goal_kind="speedup",
            goal=GOAL_SPEEDUP,
            notes=[
                *notes,
                "measured: trigger() only (fresh warehouse copy per run, made before the "
                "clock starts; imports and one warm-up trigger done first); its stages are "
                "read from the RunResult, nothing is patched",
                "baseline: default PublisherClient, publish(...).result() per message, client "
                "creation and close included",
            ],
        )
    ]
