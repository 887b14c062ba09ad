"""docs/MONITORING.md, executed: every `sql` block runs unchanged on DuckDB and on the
BigQuery emulator over the same rows, both answer alike, and the answers are what the
rows imply.

The rows are a monitoring week of October 2026 (dates no other test writes), written
beside the shared scenario slates: into a copy of the DuckDB scenario warehouse and into
the shared BigQuery emulator, whose marts the scenarios built with "now" pinned. Each
date gets a slate (Phase 3/4/5 rows), acknowledged requests for its predicted players
from a chosen delay after Phase 4 was ready, and a day's run log and alert log rows.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import scenarios
from warehouses import copy_of

from dispatcher import dbt
from dispatcher.config import Settings
from dispatcher.project import dbt_vars
from dispatcher.sandbox.slate import Slate, SlateSpec, generate_slate
from dispatcher.warehouse import Warehouse, connect

DOC = Path(__file__).resolve().parent.parent / "docs" / "MONITORING.md"
WAREHOUSES = ["duckdb_monitoring", "bigquery_monitoring"]

# --- the doc's queries ------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    heading: str
    sql: str

    @property
    def params(self) -> list[str]:
        return list(dict.fromkeys(re.findall(r"@([A-Za-z_]\w*)", self.sql)))


def doc_queries(text: str) -> list[Query]:
    """Every ```sql block with the heading above it; an unclosed block is an error."""
    queries: list[Query] = []
    heading, block = "", None
    for number, line in enumerate(text.splitlines(), 1):
        if block is not None:
            if line.strip() == "```":
                queries.append(Query(heading, "\n".join(block)))
                block = None
            else:
                block.append(line)
        elif line.strip() == "```sql":
            block = []
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.strip().startswith("```sql"):
            raise ValueError(f"line {number}: a sql fence takes nothing after `sql`")
    if block is not None:
        raise ValueError("a ```sql block is never closed")
    return queries


QUERIES = doc_queries(DOC.read_text(encoding="utf-8"))
BY_HEADING = {query.heading: query for query in QUERIES}

# --- the monitoring week ----------------------------------------------------------------

FIRST, LAST = dt.date(2026, 10, 1), dt.date(2026, 10, 10)
#: The date the per-date queries are asked about: coverage fell short.
FOCUS = dt.date(2026, 10, 2)
PARAMS = {"start_date": FIRST, "end_date": LAST, "game_date": FOCUS}


class Run(NamedTuple):
    command: str
    trigger_source: str | None
    outcome: str
    exit_code: int = 0
    requests_published: int = 0


class AlertRow(NamedTuple):
    run: int  # index into the day's runs
    rule: str
    level: str
    kind: str
    channel: str
    status: str


@dataclass(frozen=True)
class Day:
    spec: SlateSpec
    #: Phase 4 ready -> the first acknowledged request, seconds; None: nothing requested.
    latency_seconds: int | None
    first_source: str
    runs: tuple[Run, ...]
    alerts: tuple[AlertRow, ...] = ()


#: 120 players, 100 expected, all with production-ready features and predicted.
FULL = {
    "teams": 8,
    "share_below_minutes": 0.1083,
    "share_missing_features": 0.0,
    "share_production_ready": 1.0,
    "share_predicted": 1.0,
    "now": scenarios.NOW,
}


def _spec(day: int, **knobs: Any) -> SlateSpec:
    return SlateSpec(game_date=dt.date(2026, 10, day), **{**FULL, "seed": 40 + day, **knobs})


TRIGGER = Run("trigger", "pubsub", "dispatched", 0, 100)
START = Run("start", "scheduler", "nothing_pending")
STATUS = Run("status", "scheduler", "ok")

DAYS = (
    # The event never came: the 06:00 backup dispatched 25 minutes late.
    Day(_spec(1), 1500, "scheduler",
        (Run("start", "scheduler", "dispatched", 0, 100), STATUS),
        (AlertRow(0, "latency", "warning", "new", "log", "sent"),
         AlertRow(0, "latency", "warning", "new", "slack", "sent"),
         AlertRow(1, "latency", "warning", "resolved", "log", "sent"),
         AlertRow(1, "latency", "warning", "resolved", "slack", "sent"))),
    # 2 players without features, 4 not production ready: 94 % covered.
    Day(_spec(2, share_missing_features=0.02, share_production_ready=0.96), 120, "pubsub",
        (Run("trigger", "pubsub", "dispatched", 0, 94), START, STATUS),
        (AlertRow(0, "partial_dispatch", "warning", "new", "log", "sent"),
         AlertRow(1, "partial_dispatch", "warning", "repeat", "log", "suppressed"),
         AlertRow(2, "sla_missed", "critical", "new", "log", "sent"),
         AlertRow(2, "sla_missed", "critical", "new", "slack", "sent"))),
    Day(_spec(3), 600, "pubsub", (TRIGGER, START, STATUS)),  # exactly 10 minutes
    Day(_spec(4, share_predicted=0.95), 240, "pubsub", (TRIGGER, STATUS)),  # exactly 95 %
    Day(_spec(5), 180, "pubsub",
        (TRIGGER, Run("plan", "manual", "nothing_pending"),
         Run("backfill", "backfill", "nothing_pending"), STATUS)),
    # A slate on a date without a game: no row in the daily mart, no break in a streak.
    Day(_spec(6, on_schedule=False), None, "pubsub", (Run("status", "scheduler", "no_games"),)),
    Day(_spec(7), 60, "pubsub", (TRIGGER, STATUS)),
    # The event's publish failed; a person's retry dispatched 5 minutes after ready.
    Day(_spec(8), 300, "manual",
        (Run("trigger", "pubsub", "publish_failed", 1, 0),
         Run("retry", "manual", "dispatched", 0, 100), STATUS),
        (AlertRow(0, "publish_failed", "critical", "new", "log", "sent"),
         AlertRow(0, "publish_failed", "critical", "new", "slack", "sent"),
         AlertRow(0, "publish_failed", "critical", "new", "email", "failed"))),
    Day(_spec(9), 90, "pubsub", (TRIGGER, Run("retry", "retry", "nothing_pending"), STATUS)),
    Day(_spec(10), 150, "pubsub", (TRIGGER, START, STATUS)),
)  # fmt: skip
GAME_DAYS = tuple(day for day in DAYS if day.spec.on_schedule)
SUCCESS = {
    dt.date(2026, 10, 1): False,  # 25 minutes
    dt.date(2026, 10, 2): False,  # 94 %
    **{day.spec.game_date: True for day in GAME_DAYS[2:]},
}

EXPECTED_STATES = ("not_ready", "pending", "in_flight", "predicted")


def ready_at(slate: Slate) -> dt.datetime:
    """The feature write that made the date ready, as fct_phase4_readiness defines it."""
    expected = {p for p, state in slate.player_states.items() if state in EXPECTED_STATES}
    writes = sorted(
        row["updated_at"]
        for row in slate.features
        if row["is_production_ready"] and row["player_lookup"] in expected
    )
    variables = dbt_vars()
    needed = min(
        variables["ready_count_threshold"],
        math.ceil(variables["ready_pct_threshold"] * len(expected) / 100),
    )
    return writes[needed - 1].astimezone(dt.UTC).replace(tzinfo=None)


def avg_feature_quality(slate: Slate) -> float:
    expected = {p for p, state in slate.player_states.items() if state in EXPECTED_STATES}
    scores = [
        Decimal(str(row["feature_quality_score"]))
        for row in slate.features
        if row["player_lookup"] in expected
    ]
    return float((sum(scores) / len(scores)).quantize(Decimal("0.01"), ROUND_HALF_UP))


@dataclass(frozen=True)
class Week:
    slates: dict[dt.date, Slate]
    ready: dict[dt.date, dt.datetime]
    runs: list[dict[str, Any]]
    alerts: list[dict[str, Any]]


def _requests(day: Day, slate: Slate, ready: dt.datetime) -> list[dict[str, Any]]:
    """Acknowledged requests for the predicted players, the first `latency_seconds`
    after Phase 4 was ready, one a second after it."""
    if day.latency_seconds is None:
        return []
    games = {row["player_lookup"]: row["game_id"] for row in slate.context}
    predicted = sorted(p for p, state in slate.player_states.items() if state == "predicted")
    first = ready + dt.timedelta(seconds=day.latency_seconds)
    rows = []
    for n, player in enumerate(predicted):
        published = first + dt.timedelta(seconds=n)
        rows.append({
            "request_id": f"{slate.game_date}/{player}/1", "game_date": slate.game_date,
            "player_lookup": player, "game_id": games[player], "attempt": 1,
            "batch_id": f"batch-{slate.game_date}", "trigger_source": day.first_source,
            "claimed_at": published - dt.timedelta(seconds=1), "published_at": published,
            "message_id": f"m-{slate.game_date}-{n}",
        })  # fmt: skip
    return rows


def _week() -> Week:
    slates, ready, runs, alerts = {}, {}, [], []
    for day in DAYS:
        slate = generate_slate(day.spec)
        game_date = slate.game_date
        slates[game_date] = slate
        if day.spec.on_schedule:
            ready[game_date] = ready_at(slate)
        slate.ledger.extend(_requests(day, slate, ready.get(game_date, dt.datetime.min)))
        start = slate.phase4_completed_at.astimezone(dt.UTC).replace(tzinfo=None)
        counts = slate.counts
        for n, run in enumerate(day.runs):
            started = start + dt.timedelta(minutes=15 * n)
            runs.append({
                "run_id": f"{game_date}/run/{n}", "game_date": game_date,
                "command": run.command, "trigger_source": run.trigger_source,
                "batch_id": f"batch-{game_date}" if run.requests_published else None,
                "outcome": run.outcome, "exit_code": run.exit_code,
                "error_message": "PublishError: 100 of 100 failed" if run.exit_code else None,
                "players_expected": counts.expected, "players_ready": counts.ready,
                "players_predicted": counts.predicted, "players_in_flight": 0,
                "requests_published": run.requests_published, "started_at": started,
                "finished_at": started + dt.timedelta(seconds=2), "duration_ms": 2000,
            })  # fmt: skip
        for n, alert in enumerate(day.alerts):
            alerts.append({
                "alert_id": f"{game_date}/alert/{n}", "game_date": game_date,
                "run_id": f"{game_date}/run/{alert.run}", "rule": alert.rule,
                "level": alert.level, "kind": alert.kind,
                "message": f"{alert.rule} {alert.level} for {game_date}",
                "dedup_key": f"{game_date}/{alert.rule}", "channel": alert.channel,
                "status": alert.status,
                "error_message": "SMTP timeout" if alert.status == "failed" else None,
                "created_at": start + dt.timedelta(minutes=15 * alert.run + 1, seconds=n),
            })  # fmt: skip
    return Week(slates=slates, ready=ready, runs=runs, alerts=alerts)


WEEK = _week()


def _insert(wh: Warehouse, table: str, rows: list[dict[str, Any]]) -> None:
    """One INSERT of every row, each value a named parameter."""
    columns = list(rows[0])
    values = ", ".join(
        "(" + ", ".join(f"@{column}_{n}" for column in columns) + ")" for n in range(len(rows))
    )
    params = {f"{column}_{n}": row[column] for n, row in enumerate(rows) for column in columns}
    wh.execute(
        f"insert into nba_orchestration.{table} ({', '.join(columns)}) values {values}", params
    )


def _write_logs(settings: Settings) -> None:
    wh = connect(settings)
    try:
        for table, rows in (("dispatch_runs", WEEK.runs), ("alert_log", WEEK.alerts)):
            wh.execute(
                f"delete from nba_orchestration.{table} where game_date between @first and @last",
                {"first": FIRST, "last": LAST},
            )
            _insert(wh, table, rows)
    finally:
        wh.close()


@pytest.fixture(scope="module")
def duckdb_monitoring(duckdb_scenarios, tmp_path_factory) -> Settings:
    """A copy of the DuckDB scenario warehouse with the monitoring week written in."""
    from dispatcher.sandbox.load import write_duckdb

    settings = copy_of(duckdb_scenarios.duckdb_path, tmp_path_factory.mktemp("monitoring"))
    write_duckdb(settings.duckdb_path, list(WEEK.slates.values()), include_ledger=True)
    _write_logs(settings)
    return settings


@pytest.fixture(scope="module")
def bigquery_monitoring(bigquery_scenarios) -> Settings:
    """The shared BigQuery emulator with the monitoring week written in."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from dispatcher.sandbox.load import write_bigquery

    client = bigquery.Client(
        project="nba-test",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=bigquery_scenarios.bigquery_api_endpoint),
    )
    try:
        write_bigquery(client, "nba-test", list(WEEK.slates.values()), include_ledger=True)
    finally:
        client.close()
    _write_logs(bigquery_scenarios)
    return bigquery_scenarios


# --- running the doc --------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """One type per value across the warehouses: numbers as floats to 6 places."""
    if isinstance(value, Decimal | float) and not isinstance(value, bool):
        return round(float(value), 6)
    return value


def run_query(settings: Settings, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    wh = connect(settings)
    try:
        rows = wh.query(sql, params)
    finally:
        wh.close()
    return [{key: _plain(value) for key, value in row.items()} for row in rows]


Answers = dict[str, list[dict[str, Any]]]


def _answers(settings: Settings) -> Answers:
    """Every query of the doc, by heading, bound to the monitoring week."""
    return {
        query.heading: run_query(settings, query.sql, {p: PARAMS[p] for p in query.params})
        for query in QUERIES
    }


@pytest.fixture(scope="module")
def duckdb_answers(duckdb_monitoring) -> Answers:
    return _answers(duckdb_monitoring)


@pytest.fixture(scope="module")
def bigquery_answers(bigquery_monitoring) -> Answers:
    return _answers(bigquery_monitoring)


@pytest.fixture(params=["duckdb", "bigquery"])
def answers(request) -> Answers:
    return request.getfixturevalue(f"{request.param}_answers")


@pytest.fixture(params=WAREHOUSES)
def monitoring(request) -> Settings:
    return request.getfixturevalue(request.param)


def _by_date(rows: list[dict[str, Any]], column: str) -> dict[dt.date, Any]:
    return {row["game_date"]: row[column] for row in rows}


# --- the doc itself -----------------------------------------------------------------------


def test_the_doc_has_a_query_under_each_heading():
    assert len(QUERIES) >= 10
    headings = [query.heading for query in QUERIES]
    assert all(headings) and len(set(headings)) == len(headings), headings
    assert all(query.sql.strip() for query in QUERIES)


def test_the_parser_finds_every_block_and_refuses_an_open_one():
    text = "# A\n```sql\nselect 1\n```\n## B\ntext\n```sql\nselect 2\n```\n```\nnot sql\n```\n"
    assert doc_queries(text) == [Query("A", "select 1"), Query("B", "select 2")]
    assert DOC.read_text(encoding="utf-8").count("```sql") == len(QUERIES)
    with pytest.raises(ValueError, match="never closed"):
        doc_queries("# A\n```sql\nselect 1\n")


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: q.heading)
def test_each_query_is_portable_as_written(query):
    """What the two engines do not share, and what the doc promises about names."""
    sql = query.sql
    assert set(query.params) <= set(PARAMS), query.params
    assert "::" not in sql and "`" not in sql and "$" not in sql
    assert not re.search(r"\b(countif|safe_divide|date_diff|datediff|ilike)\b", sql, re.I)
    tables = set(re.findall(r"\b(?:from|join)\s+([a-z_]+\.[a-z_]+)", sql))
    assert tables and all(name.startswith("nba_orchestration.") for name in tables)
    if "between @start_date and @end_date" not in sql:
        assert "game_date = @game_date" in sql


def test_the_week_is_what_it_says():
    for day in GAME_DAYS:
        assert day.spec.counts().expected == 100
    assert set(SUCCESS) == {day.spec.game_date for day in GAME_DAYS}
    assert {row["game_date"] for row in WEEK.runs} == set(WEEK.slates)


# --- both warehouses agree ------------------------------------------------------------------


def test_every_query_runs_on_both_warehouses_and_they_agree(duckdb_answers, bigquery_answers):
    assert list(duckdb_answers) == list(bigquery_answers) == [q.heading for q in QUERIES]
    for heading, rows in duckdb_answers.items():
        assert rows, f"{heading}: no rows on the monitoring week"
        assert [list(row) for row in rows] == [list(row) for row in bigquery_answers[heading]]
        assert rows == bigquery_answers[heading], heading


# --- the answers are what the week implies ----------------------------------------------------


def test_each_game_day_against_the_targets(answers):
    rows = answers["Did each game day meet the targets?"]
    assert [row["game_date"] for row in rows] == sorted(SUCCESS)  # the off day has no row
    assert _by_date(rows, "is_success") == SUCCESS
    assert _by_date(rows, "coverage_pct")[dt.date(2026, 10, 2)] == 94.0
    assert _by_date(rows, "coverage_pct")[dt.date(2026, 10, 4)] == 95.0  # met, exactly
    assert _by_date(rows, "minutes_to_first_request")[dt.date(2026, 10, 3)] == 10.0  # met
    assert _by_date(rows, "first_trigger_source") == {
        day.spec.game_date: day.first_source for day in GAME_DAYS
    }
    assert _by_date(rows, "is_latency_met")[dt.date(2026, 10, 1)] is False
    assert _by_date(rows, "is_coverage_met")[dt.date(2026, 10, 2)] is False


def test_seven_consecutive_game_days_across_an_off_day(answers):
    assert answers["Have we had 7 consecutive successful game days?"] == [
        {
            "first_game_date": dt.date(2026, 10, 3),
            "last_game_date": dt.date(2026, 10, 10),
            "game_days": 7,
            "is_target_met": True,
            "is_current": True,
        }
    ]


def test_latency_average_p90_and_worst(answers):
    minutes = sorted(day.latency_seconds / 60 for day in GAME_DAYS)
    [row] = answers["How fast do we dispatch once Phase 4 is ready?"]
    assert row == {
        "game_days": len(minutes),
        "avg_minutes": pytest.approx(sum(minutes) / len(minutes)),
        "p90_minutes": minutes[math.ceil(0.9 * len(minutes)) - 1],
        "max_minutes": 25.0,
        "game_days_within_target": 8,
        "success_latency_minutes": dbt_vars()["success_latency_minutes"],
    }
    assert row["avg_minutes"] == 6.0


def test_the_slow_day_names_the_backup(answers):
    [row] = answers["Which game days were slow, and who dispatched first?"]
    day = dt.date(2026, 10, 1)
    assert row["game_date"] == day
    assert row["phase4_ready_at"] == WEEK.ready[day]
    assert row["first_requested_at"] == WEEK.ready[day] + dt.timedelta(minutes=25)
    assert (row["first_trigger_source"], row["runs_pubsub"], row["runs_scheduler"]) == (
        "scheduler", 0, 2,
    )  # fmt: skip


def test_coverage_over_the_range(answers):
    predicted = sum(WEEK.slates[day.spec.game_date].counts.predicted for day in GAME_DAYS)
    [row] = answers["Did we predict more than 95 % of the expected players?"]
    assert row == {
        "game_days": 9,
        "players_expected": 900,
        "players_predicted": predicted,
        "coverage_pct": round(100 * predicted / 900, 2),
        "worst_coverage_pct": 94.0,
        "game_days_covered": 8,
        "success_coverage_pct": 95.0,
    }
    assert predicted == 889


def test_the_sla_is_missed_where_players_are(answers):
    rows = answers["Were predictions complete by 07:00 PT?"]
    missing = _by_date(rows, "players_missing")
    assert {day: n for day, n in missing.items() if n} == {
        dt.date(2026, 10, 2): 6,
        dt.date(2026, 10, 4): 5,
    }
    assert _by_date(rows, "is_sla_met") == {day: not missing[day] for day in missing}
    # 07:00 in Los Angeles is 14:00 UTC in October (daylight time).
    assert {row["sla_deadline_at"].time() for row in rows} == {dt.time(14, 0)}


def test_phase4_quality(answers):
    rows = answers["How ready were the features, and how good?"]
    assert _by_date(rows, "ready_pct") == {
        day: 94.0 if day == dt.date(2026, 10, 2) else 100.0 for day in SUCCESS
    }
    assert _by_date(rows, "avg_feature_quality_score") == {
        day: avg_feature_quality(WEEK.slates[day]) for day in SUCCESS
    }
    assert _by_date(rows, "phase4_ready_at") == {day: WEEK.ready[day] for day in SUCCESS}


def test_who_is_missing_and_why(answers):
    assert answers["Which players of a date are not predicted, and why?"] == [
        {"state": "not_ready", "reason": "features not production ready", "players": 4,
         "max_request_attempts": 0},
        {"state": "not_ready", "reason": "no row in ml_feature_store_v2", "players": 2,
         "max_request_attempts": 0},
    ]  # fmt: skip
    players = answers["Who exactly?"]
    slate = WEEK.slates[FOCUS]
    assert {row["player_lookup"] for row in players} == {
        p for p, state in slate.player_states.items() if state == "not_ready"
    }
    assert [row["team_abbr"] for row in players] == sorted(row["team_abbr"] for row in players)


def test_runs_per_trigger_source(answers):
    rows = {row["game_date"]: row for row in answers["What woke the dispatcher, and how often?"]}
    assert set(rows) == set(SUCCESS)
    for day in GAME_DAYS:
        row, sources = rows[day.spec.game_date], Counter(run.trigger_source for run in day.runs)
        assert row["runs"] == len(day.runs)
        for source in ("pubsub", "scheduler", "manual", "backfill"):
            assert row[f"runs_{source}"] == sources[source], (day.spec.game_date, source)
        assert row["runs_other"] == sources["retry"]
        assert row["runs_failed"] == sum(run.exit_code == 1 for run in day.runs)
        assert row["requests_published"] == sum(run.requests_published for run in day.runs)
    assert rows[dt.date(2026, 10, 5)]["runs_backfill"] == 1
    assert rows[dt.date(2026, 10, 8)]["runs_failed"] == 1


def test_which_path_dispatches_first(answers):
    rows = answers["Which path dispatches first?"]
    assert [(r["trigger_source"], r["game_days"], r["successful_game_days"]) for r in rows] == [
        ("pubsub", 7, 6),
        ("manual", 1, 1),
        ("scheduler", 1, 0),
    ]
    assert rows[0]["avg_minutes"] == pytest.approx(24 / 7, abs=1e-6)


def test_alert_volume(answers):
    assert answers["How many alerts did people get?"] == [
        {"game_date": dt.date(2026, 10, 1), "alerts_sent": 1, "critical_alerts_sent": 0,
         "is_success": False},
        {"game_date": dt.date(2026, 10, 2), "alerts_sent": 2, "critical_alerts_sent": 1,
         "is_success": False},
        {"game_date": dt.date(2026, 10, 8), "alerts_sent": 1, "critical_alerts_sent": 1,
         "is_success": True},
    ]  # fmt: skip
    assert [
        (r["rule"], r["level"], r["alerts_sent"], r["game_dates"], r["deliveries"])
        for r in answers["Which rules fire most?"]
    ] == [
        ("latency", "warning", 1, 1, 2),
        ("partial_dispatch", "warning", 1, 1, 1),
        ("publish_failed", "critical", 1, 1, 2),
        ("sla_missed", "critical", 1, 1, 2),
    ]


def test_one_game_day_for_on_call(answers):
    [row] = answers["How does one game day stand?"]
    assert row["game_date"] == FOCUS
    assert (row["players_expected"], row["players_ready"], row["players_predicted"]) == (
        100, 94, 94,
    )  # fmt: skip
    assert (row["runs"], row["runs_failed"], row["requests_published"]) == (3, 0, 94)
    assert (row["alerts_sent"], row["is_success"]) == (2, False)
    runs = answers["What ran on a date?"]
    assert [(r["command"], r["trigger_source"], r["outcome"]) for r in runs] == [
        ("trigger", "pubsub", "dispatched"),
        ("start", "scheduler", "nothing_pending"),
        ("status", "scheduler", "ok"),
    ]
    alerts = answers["What was alerted on a date, and did it arrive?"]
    assert [(a["rule"], a["kind"], a["channel"], a["status"]) for a in alerts] == [
        ("partial_dispatch", "new", "log", "sent"),
        ("partial_dispatch", "repeat", "log", "suppressed"),
        ("sla_missed", "new", "log", "sent"),
        ("sla_missed", "new", "slack", "sent"),
    ]


# --- the same queries on the shared scenario dates ------------------------------------------


def test_a_scenario_day_as_the_slate_knobs_say(monitoring):
    """The per-date queries on dates the scenarios wrote: a complete day and a ready one."""
    stand = BY_HEADING["How does one game day stand?"].sql
    complete = scenarios.COMPLETE
    [row] = run_query(monitoring, stand, {"game_date": complete.game_date})
    counts = complete.counts()
    assert (row["players_expected"], row["players_predicted"], row["coverage_pct"]) == (
        counts.expected, counts.expected, 100.0,
    )  # fmt: skip
    assert row["first_trigger_source"] is None and row["is_success"] is False  # no request

    ready = scenarios.READY
    [row] = run_query(monitoring, stand, {"game_date": ready.game_date})
    counts = ready.counts()
    assert row["first_trigger_source"] == "pubsub"  # the slate's in-flight requests
    assert row["coverage_pct"] == round(100 * counts.predicted / counts.expected, 2)

    missing = run_query(
        monitoring,
        BY_HEADING["Which players of a date are not predicted, and why?"].sql,
        {"game_date": ready.game_date},
    )
    by_state = Counter()
    for group in missing:
        by_state[group["state"]] += group["players"]
    assert by_state == {
        "not_ready": counts.not_ready, "pending": counts.pending, "in_flight": counts.in_flight,
    }  # fmt: skip


def test_a_date_without_games_has_no_daily_row(monitoring):
    rows = run_query(
        monitoring,
        BY_HEADING["How does one game day stand?"].sql,
        {"game_date": dt.date(2026, 10, 6)},
    )
    assert rows == []


# --- the daily mart says what the other marts say ------------------------------------------

#: The columns fct_dispatch_daily computes by the other marts' definitions, per mart.
SAME_AS = {
    "fct_phase4_readiness": (
        "games_scheduled", "players_expected", "players_ready", "ready_pct", "phase4_ready_at",
    ),
    "fct_prediction_coverage": ("players_predicted", "players_missing", "coverage_pct"),
    "fct_dispatch_latency": (
        "first_requested_at", "first_trigger_source", "minutes_to_first_request",
        "last_predicted_at", "sla_deadline_at", "is_sla_met",
    ),
}  # fmt: skip


def test_the_daily_mart_says_what_the_other_marts_say(monitoring):
    """Every game day of the week and of the scenarios, column for column."""
    dates = {"first": FIRST, "last": scenarios.NOW.date()}
    columns = sorted({column for names in SAME_AS.values() for column in names})
    daily = {
        row["game_date"]: row
        for row in run_query(
            monitoring,
            f"select game_date, {', '.join(columns)} from nba_orchestration.fct_dispatch_daily"
            " where game_date between @first and @last",
            dates,
        )
    }
    assert set(SUCCESS) | {scenarios.READY.game_date, scenarios.NO_PHASE3.game_date} <= set(daily)
    for mart, names in SAME_AS.items():
        theirs = {
            row["game_date"]: {name: row[name] for name in names}
            for row in run_query(
                monitoring,
                f"select game_date, {', '.join(names)} from nba_orchestration.{mart}"
                " where game_date between @first and @last",
                dates,
            )
        }
        for day, row in daily.items():
            assert {name: row[name] for name in names} == theirs[day], (mart, day)


def test_the_alert_rules_of_a_date(answers):
    rows = answers["What do the alert rules say about a date now?"]
    levels = {row["rule"]: row["level"] for row in rows}
    assert set(levels) == {
        "phase4_critical",
        "partial_dispatch",
        "coverage",
        "latency",
        "sla_missed",
    }
    assert levels["partial_dispatch"] == "warning"  # 6 of 100 missing: over 5 %
    assert levels["phase4_critical"] == "ok"


# --- the mart's unit tests: the success definition at its edges ---------------------------


def test_the_daily_unit_tests_pass(duckdb_monitoring):
    """They also run in every `dbt build`, on both warehouses; here they are named."""
    result = dbt.run_dbt(
        duckdb_monitoring, ["test", "--select", "fct_dispatch_daily,test_type:unit"], check=False
    )
    assert dict((uid.rsplit(".", 1)[-1], status) for uid, status in result.statuses) == {
        "daily_success_at_its_edges": "pass",
        "daily_success_carries_the_thresholds_it_applied": "pass",
        "daily_sla_and_feature_quality": "pass",
        "daily_runs_and_alerts": "pass",
    }
