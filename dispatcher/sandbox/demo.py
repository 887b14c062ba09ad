"""The whole loop on one machine: Phase 4 in two waves, the completion event, the
reference worker, the retry, the status check, and the marts analysts read.

The story runs on the wall clock: each Phase 4 wave's feature rows carry the moment the
wave is written, and the dispatcher runs right after it, so the latency mart measures
what the dispatcher did. By default the game date is the next one whose SLA deadline is
still ahead; a date whose deadline has passed shows the SLA missed, and says why."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .. import dbt, display, marts
from ..config import Settings
from ..dispatch import Dispatcher, RunResult
from ..logs import log, progress, progress_done
from ..project import dbt_vars
from ..warehouse import connect
from .load import write_duckdb
from .slate import SlateSpec, generate_slate
from .worker import run_worker

Echo = Callable[[str], None]

#: Share of the expected players Phase 4 makes ready in its first wave.
FIRST_WAVE = 0.85
DEMO_PROJECT = "nba-demo"
#: The demo's mark on a warehouse file it may rewrite: one row per game date it wrote.
MARKER = "nba_orchestration.sandbox_marker"
#: The demo takes about a minute: by default it skips a date whose deadline is nearer.
DEADLINE_MARGIN = dt.timedelta(minutes=15)

COVERAGE_COLUMNS = [
    "players_expected", "players_ready", "players_predicted", "players_in_flight",
    "players_pending", "coverage_pct", "alert_level",
]  # fmt: skip
LATENCY_COLUMNS = [
    "phase4_ready_at", "first_requested_at", "first_trigger_source", "last_predicted_at",
    "minutes_to_first_request", "minutes_to_last_prediction", "sla_deadline_at", "is_sla_met",
    "latency_alert_level",
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
    #: The alerts the story's runs sent (rule, level, kind), in order.
    alerts: list[dict[str, Any]]
    #: The HTML report the demo ends by writing, beside the warehouse file.
    report: Path


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def sla_deadline(game_date: dt.date) -> dt.datetime:
    """``game_date``'s SLA deadline in UTC, as fct_dispatch_latency computes it: the dbt
    var sla_local_time in var sla_timezone (07:00 America/Los_Angeles)."""
    project = dbt_vars()
    at = dt.time.fromisoformat(str(project["sla_local_time"]))
    local = dt.datetime.combine(game_date, at, tzinfo=ZoneInfo(project["sla_timezone"]))
    return local.astimezone(dt.UTC)


def next_game_date(now: dt.datetime | None = None) -> dt.date:
    """The demo's default game date: today in the SLA's time zone while its deadline is
    at least DEADLINE_MARGIN ahead of ``now`` (default: the wall clock), else tomorrow."""
    now = now or _utc_now()
    today = now.astimezone(ZoneInfo(dbt_vars()["sla_timezone"])).date()
    if sla_deadline(today) - now >= DEADLINE_MARGIN:
        return today
    return today + dt.timedelta(days=1)


def run_demo(
    settings: Settings,
    game_date: dt.date | None = None,
    echo: Echo = print,
    *,
    steps: Echo | None = None,
    overwrite: bool = False,
) -> DemoResult:
    """Run the story on the embedded DuckDB (transport local, or pubsub on the emulator).

    ``game_date`` defaults to :func:`next_game_date`. ``echo`` prints the outcome (the
    status check, the marts and what they say), ``steps`` the story's steps (default:
    ``echo``). The demo replaces its date's inputs and ledger rows, so it
    refuses (DemoError) a warehouse file holding data it did not write, unless
    ``overwrite``; see :func:`claim_warehouse`."""
    step = echo if steps is None else steps
    if settings.warehouse != "duckdb":
        raise DemoError("the demo runs on the embedded default (DISPATCHER_WAREHOUSE=duckdb)")
    if settings.transport == "pubsub":
        if not os.environ.get("PUBSUB_EMULATOR_HOST"):
            raise DemoError("--transport pubsub needs PUBSUB_EMULATOR_HOST (the Pub/Sub emulator)")
        project = settings.gcp_project or DEMO_PROJECT
        settings = settings.with_(gcp_project=project)
        _prepare_pubsub(project)

    started = _utc_now()
    game_date = game_date or next_game_date(started)
    spec = SlateSpec(
        game_date=game_date,
        share_missing_features=0.0,
        share_production_ready=FIRST_WAVE,
        now=started,
        phase4_completed_at=started,
        phase4_in_one_write=True,
    )
    counts = spec.counts()
    claim_warehouse(settings.duckdb_path, game_date, overwrite=overwrite)
    slate = generate_slate(spec)
    step(f"[1/7] sample slate for {game_date}: {counts.players} players on {spec.teams} teams,"
         f" {counts.expected} expected to play")  # fmt: skip
    deadline = sla_deadline(game_date)
    if deadline <= started:
        step(f"      its SLA deadline, {_deadline_text(deadline)}, has passed: the SLA"
             " cannot be met")  # fmt: skip
    write_duckdb(settings.duckdb_path, slate)
    step(f"[2/7] dbt build into {settings.duckdb_path} (models and tests)")
    _build(settings)

    dispatcher = Dispatcher(settings)
    step(f"[3/7] Phase 4 wave 1: {counts.ready} of {counts.expected} ready;"
         " the completion event triggers the dispatcher")  # fmt: skip
    _first_wave(settings, spec)
    first = dispatcher.trigger(game_date, trigger_source="pubsub")
    _check(first)
    step(f"      published {first.requests_published} requests ({settings.transport})")
    worked = _work(settings, first.requests_published)
    step(f"[4/7] reference worker: {worked} players predicted by all five systems")

    step(f"[5/7] Phase 4 wave 2: the other {counts.not_ready} players become ready;"
         " the 06:15 retry")  # fmt: skip
    _second_wave(settings, game_date)
    # The ledger stamps whole seconds: the retry's requests must not share the event's
    # second, or the latency mart could not tell which trigger dispatched first.
    time.sleep(1.0 - time.time() % 1.0)
    second = dispatcher.retry(game_date, trigger_source="scheduler")
    _check(second)
    step(f"      published {second.requests_published} requests")
    worked += _work(settings, second.requests_published)
    step(f"[6/7] reference worker: {worked} players predicted in all")

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
    echo(display.record(latency, LATENCY_COLUMNS) + "\n")
    for line in latency_story(latency, started):
        echo(line)
    alerts = [
        alert for run in (first, second, status) for alert in run.alerts
        if alert["status"] == "sent"
    ]  # fmt: skip
    echo(alerts_story(alerts))
    report = _write_report(settings, game_date)
    echo(f"\nReport: {report} (open it in a browser: {report.resolve().as_uri()})")
    return DemoResult(game_date, first, second, status, worked, coverage, latency, alerts, report)


def alerts_story(alerts: list[dict[str, Any]]) -> str:
    """The alerts the demo's runs sent, in one line."""
    if not alerts:
        return "Alerts sent: none"
    sent = ", ".join(f"{a['rule']} {a['level']} {a['kind']}" for a in alerts)
    return f"Alerts sent (log channel; Slack and email when configured): {sent}"


def _write_report(settings: Settings, game_date: dt.date) -> Path:
    from ..report import write_report

    out = settings.duckdb_path.with_name("report.html")
    write_report(settings, days=30, out=out, end=game_date)
    return out


def _utc(value: dt.datetime) -> dt.datetime:
    """A warehouse timestamp (naive UTC on DuckDB) as an aware UTC datetime."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _deadline_text(deadline: dt.datetime) -> str:
    local = deadline.astimezone(ZoneInfo(dbt_vars()["sla_timezone"]))
    return f"{deadline:%Y-%m-%d %H:%M:%S} UTC ({local:%H:%M %Z})"


def _duration(delta: dt.timedelta) -> str:
    minutes, seconds = divmod(int(abs(delta.total_seconds())), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def latency_story(latency: Mapping[str, Any], started: dt.datetime) -> list[str]:
    """The latency mart's row in words, from its own figures only; ``started`` (when
    the demo began) tells a deadline that had passed before the story from a late one."""
    ready, first = latency.get("phase4_ready_at"), latency.get("first_requested_at")
    if ready is None or first is None:
        lines = ["Phase 4 ready -> first request: no request"]
    else:
        seconds = (_utc(first) - _utc(ready)).total_seconds()
        lines = [
            f"Phase 4 ready -> first request: {seconds:.0f} s"
            f" (minutes_to_first_request {latency.get('minutes_to_first_request')}),"
            f" latency alert {latency.get('latency_alert_level')}"
        ]
    deadline, last = latency.get("sla_deadline_at"), latency.get("last_predicted_at")
    predicted, expected = latency.get("players_predicted"), latency.get("players_expected")
    if deadline is None:
        return [*lines, "SLA met: no, the date has no deadline"]
    deadline = _utc(deadline)
    if latency.get("is_sla_met") and last is not None:
        verdict = f"yes, last prediction {_duration(deadline - _utc(last))} before"
    elif last is None or not expected or predicted != expected:
        verdict = f"no, {predicted} of {expected} players predicted by"
    elif deadline <= started:
        verdict = "no, the demo started after"
    else:
        verdict = f"no, last prediction {_duration(_utc(last) - deadline)} after"
    return [*lines, f"SLA met: {verdict} the deadline, {_deadline_text(deadline)}"]


def _check(result: RunResult) -> None:
    if result.exit_code:
        raise DemoError(f"{result.command} failed: {result.outcome} {result.error or ''}")


def _build(settings: Settings) -> None:
    """``dbt build``, its nodes counted on the progress line as they finish."""

    def node_done(done: int, total: int, name: str, status: str) -> None:
        progress(f"      building {done}/{total} {name} ({status})")

    t0 = time.perf_counter()
    try:
        result = dbt.build(settings, progress=node_done)
    finally:
        progress_done()
    log("INFO", "dbt build finished", nodes=len(result.statuses),
        duration_ms=int((time.perf_counter() - t0) * 1000))  # fmt: skip


def _work(settings: Settings, published: int) -> int:
    if not published:
        return 0
    done = 0

    def batch_done(size: int) -> None:
        nonlocal done
        done += size
        progress(f"      reference worker: {done} of {published} requests")

    try:
        result = run_worker(
            settings,
            source=settings.transport,
            max_messages=published,
            idle_exit_seconds=10 if settings.transport == "pubsub" else 0.5,
            progress=batch_done,
        )
    finally:
        progress_done()
    return result.written_players


def claim_warehouse(path: Path, game_date: dt.date, *, overwrite: bool = False) -> None:
    """Make sure the demo may write ``game_date`` into the DuckDB file at ``path``.

    A missing file, one without rows, or one the demo made (its MARKER table lists the
    game dates it wrote, and no other phase's table holds another date) is the demo's:
    the date is added to the marker. Any other file holding data is refused with a
    DemoError naming it and ``--overwrite``, before anything is written (the file is
    opened read-only); with ``overwrite`` the demo goes on, and leaves that file
    unmarked."""
    import duckdb

    if path.exists():
        with duckdb.connect(str(path), read_only=True) as con:
            foreign = _foreign_data(con)
        if foreign is not None:
            if not overwrite:
                raise DemoError(
                    f"{path} holds data the demo did not write ({foreign}); the demo would"
                    f" replace {game_date}'s inputs and ledger rows: point"
                    " DISPATCHER_DUCKDB_PATH at another file, or pass --overwrite"
                )
            log("WARNING", f"--overwrite: the demo replaces {game_date}'s rows in {path}",
                path=str(path), found=foreign)  # fmt: skip
            return
    with duckdb.connect(str(path)) as con:
        schema = MARKER.split(".")[0]
        con.execute(f"create schema if not exists {schema}")
        con.execute(
            f"create table if not exists {MARKER}"
            " (game_date date primary key, written_at timestamp not null)"
        )
        con.execute(
            f"insert or replace into {MARKER} (game_date, written_at) values (?, ?)",
            [game_date, _utc_now().replace(tzinfo=None)],
        )


def _foreign_data(con: Any) -> str | None:
    """What in an open DuckDB file the demo did not write (a short description), or None.

    Without the marker, any row of any table is foreign. With it, the dispatcher's own
    tables (nba_orchestration: the ledger, run log, ... of the demo's sandbox) are the
    demo's, and the other phases' tables may hold only the marked dates."""
    tables = con.execute(
        "select c.table_schema, c.table_name, bool_or(c.column_name = 'game_date')"
        " from information_schema.columns c join information_schema.tables t"
        " using (table_catalog, table_schema, table_name)"
        " where c.table_catalog = current_database() and t.table_type = 'BASE TABLE'"
        " group by all order by all"
    ).fetchall()
    schema, name = MARKER.split(".")
    marked = any((s, n) == (schema, name) for s, n, _ in tables)
    for table_schema, table_name, dated in tables:
        if (table_schema, table_name) == (schema, name):
            continue
        if marked and table_schema == schema:
            continue
        relation = f'"{table_schema}"."{table_name}"'
        if dated:
            others = (
                f" where game_date is null or game_date not in (select game_date from {MARKER})"
                if marked
                else ""
            )
            rows = con.execute(
                f"select distinct game_date from {relation}{others} order by 1 limit 3"
            ).fetchall()
            if rows:
                dates = ", ".join(str(row[0]) for row in rows)
                return f"{table_schema}.{table_name} has game dates {dates}"
        elif con.execute(f"select exists (select 1 from {relation})").fetchone()[0]:
            return f"{table_schema}.{table_name} has rows"
    return None


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


def _first_wave(settings: Settings, spec: SlateSpec) -> None:
    """Phase 4's first wave, written now: the slate the build ran on, its feature rows
    stamped with this moment (and an earlier run's requests of the date gone)."""
    now = _utc_now()
    _forget_earlier_runs(settings, generate_slate(replace(spec, now=now, phase4_completed_at=now)))


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
