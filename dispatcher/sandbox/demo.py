"""The whole loop on one machine: Phase 4 in two waves, the completion event, the
reference worker, the retry, the status check, and the marts analysts read."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import dbt, display, marts
from ..config import Settings
from ..dispatch import Dispatcher, RunResult
from ..warehouse import connect
from .load import write_duckdb
from .slate import SlateSpec, generate_slate
from .worker import run_worker

Echo = Callable[[str], None]

#: Share of the expected players Phase 4 makes ready in its first wave.
FIRST_WAVE = 0.85
DEMO_PROJECT = "nba-demo"

COVERAGE_COLUMNS = [
    "players_expected", "players_ready", "players_predicted", "players_in_flight",
    "players_pending", "coverage_pct", "alert_level",
]  # fmt: skip
LATENCY_COLUMNS = [
    "phase4_ready_at", "first_requested_at", "first_trigger_source", "last_predicted_at",
    "minutes_to_first_request", "minutes_to_last_prediction", "sla_deadline_at", "is_sla_met",
]  # fmt: skip


class DemoError(RuntimeError):
    """The demo cannot run with these settings."""


@dataclass(frozen=True)
class DemoResult:
    game_date: dt.date
    first_wave: RunResult
    second_wave: RunResult
    status: RunResult
    predicted_players: int
    coverage: dict[str, Any]
    latency: dict[str, Any]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def run_demo(settings: Settings, game_date: dt.date, echo: Echo = print) -> DemoResult:
    """Run the story on the embedded DuckDB (transport local, or pubsub on the emulator)."""
    if settings.warehouse != "duckdb":
        raise DemoError("the demo runs on the embedded default (DISPATCHER_WAREHOUSE=duckdb)")
    if settings.transport == "pubsub":
        if not os.environ.get("PUBSUB_EMULATOR_HOST"):
            raise DemoError("--transport pubsub needs PUBSUB_EMULATOR_HOST (the Pub/Sub emulator)")
        project = settings.gcp_project or DEMO_PROJECT
        settings = settings.with_(gcp_project=project)
        _prepare_pubsub(project)

    now = _utc_now()
    spec = SlateSpec(
        game_date=game_date,
        share_missing_features=0.0,
        share_production_ready=FIRST_WAVE,
        now=now,
        phase4_completed_at=now,
    )
    counts = spec.counts()
    slate = generate_slate(spec)
    echo(f"[1/7] sample slate for {game_date}: {counts.players} players on {spec.teams} teams,"
         f" {counts.expected} expected to play")  # fmt: skip
    write_duckdb(settings.duckdb_path, slate)
    echo(f"[2/7] dbt build into {settings.duckdb_path} (models and tests)")
    dbt.build(settings)
    _forget_earlier_runs(settings, slate)

    dispatcher = Dispatcher(settings)
    echo(f"[3/7] Phase 4 wave 1: {counts.ready} of {counts.expected} ready;"
         " the completion event triggers the dispatcher")  # fmt: skip
    first = dispatcher.trigger(game_date, trigger_source="pubsub")
    _check(first)
    echo(f"      published {first.requests_published} requests ({settings.transport})")
    worked = _work(settings, first.requests_published)
    echo(f"[4/7] reference worker: {worked} players predicted by all five systems")

    echo(f"[5/7] Phase 4 wave 2: the other {counts.not_ready} players become ready;"
         " the 06:15 retry")  # fmt: skip
    _second_wave(settings, game_date)
    second = dispatcher.retry(game_date, trigger_source="scheduler")
    _check(second)
    echo(f"      published {second.requests_published} requests")
    worked += _work(settings, second.requests_published)
    echo(f"[6/7] reference worker: {worked} players predicted in all")

    status = dispatcher.status(game_date, trigger_source="scheduler")
    echo(f"[7/7] 07:00 status check: {status.outcome}, {status.players_predicted} of"
         f" {status.players_expected} predicted\n")  # fmt: skip
    warehouse = connect(settings)
    try:
        coverage = marts.coverage(warehouse, game_date) or {}
        latency = marts.latency(warehouse, game_date) or {}
    finally:
        warehouse.close()
    echo("Prediction coverage (fct_prediction_coverage)")
    echo(display.table([coverage], COVERAGE_COLUMNS) + "\n")
    echo("Dispatch latency (fct_dispatch_latency), UTC")
    echo(display.record(latency, LATENCY_COLUMNS))
    return DemoResult(game_date, first, second, status, worked, coverage, latency)


def _check(result: RunResult) -> None:
    if result.exit_code:
        raise DemoError(f"{result.command} failed: {result.outcome} {result.error or ''}")


def _work(settings: Settings, published: int) -> int:
    if not published:
        return 0
    result = run_worker(
        settings,
        source=settings.transport,
        max_messages=published,
        idle_exit_seconds=10 if settings.transport == "pubsub" else 0.5,
    )
    return result.written_players


def _prepare_pubsub(project: str) -> None:
    from ..transport import REQUEST_TOPIC
    from ..transport_pubsub import ensure_subscription, ensure_topics
    from .worker import DEFAULT_SUBSCRIPTION

    ensure_topics(project, [REQUEST_TOPIC])
    ensure_subscription(project, REQUEST_TOPIC, DEFAULT_SUBSCRIPTION)


def _forget_earlier_runs(settings: Settings, slate) -> None:
    """A demo re-run on the same date starts clean: that date's requests and outbox go."""
    write_duckdb(settings.duckdb_path, slate, include_ledger=True)
    warehouse = connect(settings)
    try:
        warehouse.execute(
            "delete from nba_orchestration.request_outbox where game_date = @game_date",
            {"game_date": slate.game_date},
        )
    finally:
        warehouse.close()


def _second_wave(settings: Settings, game_date: dt.date) -> None:
    warehouse = connect(settings)
    try:
        warehouse.execute(
            "update nba_predictions.ml_feature_store_v2"
            " set is_production_ready = true, updated_at = @now"
            " where game_date = @game_date and not is_production_ready",
            {"game_date": game_date, "now": _utc_now().replace(tzinfo=None)},
        )
    finally:
        warehouse.close()
