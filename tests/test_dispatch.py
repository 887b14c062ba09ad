"""The design's acceptance scenarios and bad input, on DuckDB + local outbox, DuckDB +
Pub/Sub emulator and BigQuery emulator + Pub/Sub emulator."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest
import scenarios
from click.testing import CliRunner
from warehouses import build_template, copy_of

from dispatcher import ledger, marts
from dispatcher.cli import cli
from dispatcher.dispatch import Dispatcher
from dispatcher.project import required_systems
from dispatcher.sandbox.load import write_bigquery
from dispatcher.sandbox.slate import SlateSpec, generate_slate
from dispatcher.warehouse import connect

GAME_DATE = dt.date(2026, 11, 28)
SPEC = SlateSpec(game_date=GAME_DATE, share_predicted=0.3, share_in_flight=0.1, seed=7)
#: Phase 4 has not landed: no player production ready yet.
LATE_SPEC = SlateSpec(game_date=GAME_DATE, share_production_ready=0.0, seed=8)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(tmp_path_factory.mktemp("dispatch"), [SPEC])


@pytest.fixture(scope="module")
def late_template(tmp_path_factory):
    return build_template(tmp_path_factory.mktemp("dispatch-late"), [LATE_SPEC])


@pytest.fixture
def settings(template, tmp_path):
    return copy_of(template, tmp_path)


def _outbox(settings) -> list[dict]:
    wh = connect(settings)
    try:
        return wh.query(
            "select * from nba_orchestration.request_outbox where game_date = @game_date",
            {"game_date": GAME_DATE},
        )
    finally:
        wh.close()


def _ledger(settings, game_date=GAME_DATE) -> list[dict]:
    wh = connect(settings)
    try:
        return ledger.requests(wh, game_date)
    finally:
        wh.close()


def _runs(settings) -> int:
    wh = connect(settings)
    try:
        return wh.query("select count(*) as n from nba_orchestration.dispatch_runs")[0]["n"]
    finally:
        wh.close()


# -- acceptance scenarios on the embedded default ----------------------------------------


def test_event_dispatches_every_pending_player_once(settings):
    counts = SPEC.counts()
    result = Dispatcher(settings).trigger(GAME_DATE, trigger_source="pubsub")
    assert (result.outcome, result.exit_code) == ("dispatched", 0)
    assert result.requests_published == counts.pending
    outbox = _outbox(settings)
    assert len(outbox) == counts.pending
    bodies = [json.loads(row["data"]) for row in outbox]
    assert len({body["player_lookup"] for body in bodies}) == counts.pending
    first = bodies[0]
    assert set(first) == {
        "request_id", "player_lookup", "game_date", "game_id", "line_values", "team_abbr",
        "opponent_team_abbr", "is_home", "batch_id", "trigger_source", "requested_at",
    }  # fmt: skip
    assert first["request_id"] == f"{GAME_DATE}/{first['player_lookup']}/1"
    assert first["trigger_source"] == "pubsub"
    assert json.loads(outbox[0]["attributes"]) == {
        "request_id": first["request_id"], "game_date": str(GAME_DATE),
        "player_lookup": first["player_lookup"],
    }  # fmt: skip
    published = [row for row in _ledger(settings) if row["batch_id"] == result.batch_id]
    assert len(published) == counts.pending
    assert all(row["published_at"] and row["message_id"] for row in published)
    assert {row["message_id"] for row in published} == {row["message_id"] for row in outbox}
    assert result.players_in_flight == counts.in_flight + counts.pending


def test_second_run_for_the_same_date_publishes_nothing(settings):
    Dispatcher(settings).trigger(GAME_DATE)
    again = Dispatcher(settings).trigger(GAME_DATE)
    assert (again.outcome, again.requests_published, again.batch_id) == (
        "nothing_pending", 0, None,
    )  # fmt: skip
    assert len(_outbox(settings)) == SPEC.counts().pending


def test_retry_publishes_exactly_the_ten_whose_predictions_were_deleted(settings):
    Dispatcher(settings).trigger(GAME_DATE)
    wh = connect(settings)
    try:
        predicted = [
            p["player_lookup"]
            for p in marts.dispatch_state(wh, GAME_DATE)
            if p["state"] == "predicted"
        ]
        victims = predicted[:10]
        wh.execute(
            "delete from nba_predictions.player_prop_predictions"
            " where game_date = @game_date and player_lookup in (select * from unnest(@players))",
            {"game_date": GAME_DATE, "players": victims},
        )
    finally:
        wh.close()
    result = Dispatcher(settings).retry(GAME_DATE)
    assert result.requests_published == 10
    mine = [row for row in _ledger(settings) if row["batch_id"] == result.batch_id]
    assert sorted(row["player_lookup"] for row in mine) == sorted(victims)


def test_scheduler_waits_and_dispatches_when_phase4_lands_mid_wait(late_template, tmp_path):
    settings = copy_of(late_template, tmp_path)
    polls = []

    def phase4_lands_during_the_wait(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 2:  # Phase 4 finishes between the second and third poll
            wh = connect(settings)
            try:
                wh.execute(
                    "update nba_predictions.ml_feature_store_v2 set is_production_ready = true"
                    " where game_date = @game_date",
                    {"game_date": GAME_DATE},
                )
            finally:
                wh.close()

    result = Dispatcher(settings, sleep=phase4_lands_during_the_wait).start(
        GAME_DATE, wait_minutes=5, poll_seconds=0.01
    )
    assert len(polls) == 2
    assert (result.outcome, result.exit_code) == ("dispatched", 0)
    assert result.requests_published == LATE_SPEC.counts().in_feature_store


def test_start_gives_up_with_exit_3_when_phase4_stays_critical(late_template, tmp_path):
    clock = iter(range(0, 10_000, 30))  # every look at the clock is 30 s later
    dispatcher = Dispatcher(
        copy_of(late_template, tmp_path), sleep=lambda _s: None, clock=lambda: next(clock)
    )
    result = dispatcher.start(GAME_DATE, wait_minutes=2, poll_seconds=60)
    assert (result.outcome, result.exit_code, result.requests_published) == ("critical", 3, 0)
    assert [a["rule"] for a in result.alerts] == ["phase4_critical"]


def test_trigger_refuses_a_critical_date_and_retry_does_not(late_template, tmp_path):
    settings = copy_of(late_template, tmp_path)
    wh = connect(settings)
    try:  # 30 players ready: below the 50 critical floor
        wh.execute(
            "update nba_predictions.ml_feature_store_v2 set is_production_ready = true"
            " where game_date = @game_date and player_lookup in (select player_lookup from"
            " nba_orchestration.fct_player_dispatch_state where game_date = @game_date"
            " order by player_lookup limit 30)",
            {"game_date": GAME_DATE},
        )
    finally:
        wh.close()
    refused = Dispatcher(settings).trigger(GAME_DATE)
    assert (refused.outcome, refused.exit_code, refused.requests_published) == ("critical", 3, 0)
    retried = Dispatcher(settings).retry(GAME_DATE)
    assert (retried.exit_code, retried.requests_published) == (0, 30)


def test_status_exit_codes(settings):
    breach = Dispatcher(settings).status(GAME_DATE)
    assert (breach.outcome, breach.exit_code) == ("sla_breach", 4)
    assert breach.alerts[0]["level"] == "critical"  # 30 % predicted
    wh = connect(settings)
    try:  # every expected player predicted: write all five systems for everyone
        wh.execute(
            "insert into nba_predictions.player_prop_predictions"
            " (prediction_id, system_id, player_lookup, game_id, game_date, is_active,"
            " created_at)"
            " select player_lookup || system_id, system_id, player_lookup, game_id, game_date,"
            " true, now() from nba_orchestration.fct_player_dispatch_state,"
            " (select unnest(@systems) as system_id)"
            " where game_date = @game_date",
            {"game_date": GAME_DATE, "systems": list(required_systems())},
        )
    finally:
        wh.close()
    ok = Dispatcher(settings).status(GAME_DATE)
    assert (ok.outcome, ok.exit_code) == ("ok", 0)
    # The coverage breach the first check sent is resolved, once.
    coverage = [(a["kind"], a["status"]) for a in ok.alerts if a["rule"] == "coverage"]
    assert coverage == [("resolved", "sent")]


def test_status_alert_is_sent_once_then_suppressed(settings):
    first = Dispatcher(settings).status(GAME_DATE)
    second = Dispatcher(settings).status(GAME_DATE)
    assert first.alerts[0]["status"] == "sent"
    assert second.alerts[0]["status"] == "suppressed"


def test_plan_explains_every_expected_player(settings):
    counts = SPEC.counts()
    result = Dispatcher(settings).plan(GAME_DATE)
    assert len(result.plan) == counts.expected
    publish = [item for item in result.plan if item["action"] == "publish"]
    assert len(publish) == counts.pending
    assert {item["state"] for item in result.plan if item["action"] == "skip"} == {
        "predicted", "in_flight", "not_ready",
    }  # fmt: skip
    assert all(item["reason"] for item in result.plan)
    assert result.players_filtered == counts.players - counts.expected
    assert _outbox(settings) == []  # a dry run


def test_force_requests_predicted_players_as_a_new_batch(settings):
    counts = SPEC.counts()
    result = Dispatcher(settings).start(GAME_DATE, force=True)
    assert result.requests_published == counts.pending + counts.predicted


def test_force_twice_inside_the_lease_requests_nobody_again(settings):
    counts = SPEC.counts()
    plan = Dispatcher(settings).plan(GAME_DATE, force=True)
    assert sum(item["action"] == "publish" for item in plan.plan) == (
        counts.pending + counts.predicted
    )
    first = Dispatcher(settings).start(GAME_DATE, force=True)
    again = Dispatcher(settings).start(GAME_DATE, force=True)
    assert first.requests_published == counts.pending + counts.predicted
    assert (again.requests_published, again.outcome) == (0, "nothing_pending")
    replanned = Dispatcher(settings).plan(GAME_DATE, force=True).plan
    assert not any(item["action"] == "publish" for item in replanned)


def test_every_invocation_writes_one_run_log_row(settings):
    before = _runs(settings)
    Dispatcher(settings).plan(GAME_DATE)
    Dispatcher(settings).trigger(GAME_DATE)
    Dispatcher(settings).status(GAME_DATE)
    assert _runs(settings) == before + 3


# -- the CLI: JSON, exit codes, bad input ---------------------------------------------------


def _invoke(settings, args):
    env = {"DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path), "DISPATCHER_WAREHOUSE": "duckdb",
           "DISPATCHER_TRANSPORT": "local"}  # fmt: skip
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


def _recorded_sources(settings, batch_id) -> tuple[list[tuple[str, str]], list[str]]:
    wh = connect(settings)
    try:
        runs = wh.query(
            "select command, trigger_source from nba_orchestration.dispatch_runs"
            " where game_date = @d order by started_at",
            {"d": GAME_DATE},
        )
        requests = wh.query(
            "select distinct trigger_source from nba_orchestration.request_ledger"
            " where game_date = @d and batch_id = @batch_id",
            {"d": GAME_DATE, "batch_id": batch_id},
        )
    finally:
        wh.close()
    return [(r["command"], r["trigger_source"]) for r in runs], [
        r["trigger_source"] for r in requests
    ]


def test_cli_runs_are_manual_unless_a_job_says_otherwise(settings):
    """A person at the CLI is `manual`; the Scheduler's jobs pass --trigger-source."""
    date = ["--game-date", str(GAME_DATE), "--json"]
    manual = _invoke(settings, ["trigger", *date])
    assert manual.exit_code == 0, manual.output
    assert json.loads(manual.stdout)["trigger_source"] == "manual"
    scheduled = _invoke(settings, ["status", *date, "--trigger-source", "scheduler"])
    assert json.loads(scheduled.stdout)["trigger_source"] == "scheduler"
    runs, requested = _recorded_sources(settings, json.loads(manual.stdout)["batch_id"])
    assert runs[-2:] == [("trigger", "manual"), ("status", "scheduler")]
    assert requested == ["manual"]
    wrong = _invoke(settings, ["retry", *date, "--trigger-source", "cron"])
    assert wrong.exit_code == 2 and "cron" in wrong.output


def test_cli_trigger_json(settings):
    result = _invoke(settings, ["trigger", "--event", json.dumps({"game_date": str(GAME_DATE)}),
                                "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(payload) >= {
        "game_date", "trigger_source", "outcome", "players_expected", "players_ready",
        "players_predicted", "players_in_flight", "requests_published", "batch_id",
        "alerts", "duration_ms",
    }  # fmt: skip
    assert payload["requests_published"] == SPEC.counts().pending


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["trigger", "--event", "{not json"], "not valid JSON"),
        (["trigger", "--event", "[1, 2]"], "must be a JSON object"),
        (["trigger", "--event", "{}"], "no game_date"),
        (["trigger", "--event", '{"game_date": "2026-02-30"}'], "not a calendar date"),
        (["trigger", "--event", '{"game_date": "2031-01-01"}'], "days after today"),
        (["trigger", "--event", '{"game_date": 20261128}'], "game_date must be a string"),
        (
            ["trigger", "--event", '{"game_date": "2026-11-28", "players_ready": "many"}'],
            "players_ready must be an integer",
        ),  # fmt: skip
        (
            ["trigger", "--event", '{"game_date": "2026-11-28\'; drop table x; --"}'],
            "must be YYYY-MM-DD",
        ),  # fmt: skip
        (
            ["trigger", "--event", '{"game_date": "2026-11-28", "event_type": "other"}'],
            "event_type",
        ),  # fmt: skip
        (["retry", "--game-date", "2026-13-01"], "not a date"),
        (["status", "--game-date", "3026-01-01"], "days after today"),
        (["start", "--wait-minutes", "-1"], "-1"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(settings, args, reason):
    before_runs, before_ledger = _runs(settings), len(_ledger(settings))
    result = _invoke(settings, args)
    assert result.exit_code == 2
    assert reason in result.output
    assert _runs(settings) == before_runs
    assert len(_ledger(settings)) == before_ledger
    assert _outbox(settings) == []


def test_huge_event_is_refused(settings):
    result = _invoke(
        settings, ["trigger", "--event", json.dumps({"game_date": "2026-11-28", "x": "a" * 70_000})]
    )
    assert result.exit_code == 2
    assert "larger than" in result.output


# -- the same story on Pub/Sub and on BigQuery ------------------------------------------------


def _pull_all(project: str, subscription: str, expected: int) -> list:
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(project, subscription)
    received = []
    try:
        for _ in range(50):
            response = subscriber.pull(
                request={"subscription": path, "max_messages": 100}, timeout=10
            )
            if not response.received_messages:
                if len(received) >= expected:
                    break
                continue
            received += [m.message for m in response.received_messages]
            subscriber.acknowledge(
                request={"subscription": path,
                         "ack_ids": [m.ack_id for m in response.received_messages]},
                timeout=10,
            )  # fmt: skip
    finally:
        subscriber.close()
    return received


def _pubsub_project(monkeypatch, pubsub_emulator, project: str) -> None:
    from dispatcher.transport_pubsub import ensure_subscription, ensure_topics

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    ensure_topics(project, ["prediction-request"])
    ensure_subscription(project, "prediction-request", "worker")


def test_duckdb_with_pubsub_end_to_end(settings, pubsub_emulator, monkeypatch):
    _pubsub_project(monkeypatch, pubsub_emulator, "duckdb-e2e")
    settings = settings.with_(transport="pubsub", gcp_project="duckdb-e2e")
    result = Dispatcher(settings).trigger(GAME_DATE)
    pending = SPEC.counts().pending
    assert (result.exit_code, result.requests_published) == (0, pending)
    messages = _pull_all("duckdb-e2e", "worker", pending)
    assert len(messages) == pending
    ids = {m.attributes["request_id"] for m in messages}
    confirmed = {row["request_id"]: row["message_id"] for row in _ledger(settings)
                 if row["batch_id"] == result.batch_id}  # fmt: skip
    assert ids == set(confirmed)
    assert {m.message_id for m in messages} == set(confirmed.values())
    assert Dispatcher(settings).trigger(GAME_DATE).requests_published == 0


#: A date of its own on the shared BigQuery emulator, whose marts the scenarios built.
BQ_DATE = dt.date(2026, 11, 14)
BQ_SPEC = SlateSpec(
    game_date=BQ_DATE, share_predicted=0.2, share_in_flight=0.1, seed=14, now=scenarios.NOW
)


def test_bigquery_with_pubsub_end_to_end(
    bigquery_scenarios, bigquery_client, pubsub_emulator, monkeypatch
):
    _pubsub_project(monkeypatch, pubsub_emulator, "bq-e2e")
    settings = bigquery_scenarios.with_(transport="pubsub")
    write_bigquery(bigquery_client, "nba-test", generate_slate(BQ_SPEC), include_ledger=True)

    class BigQueryDispatcher(Dispatcher):
        def _default_transport(self, warehouse):
            from dispatcher.transport_pubsub import PubSubTransport

            return PubSubTransport("bq-e2e", publish_timeout=10)

    counts = BQ_SPEC.counts()
    result = BigQueryDispatcher(settings).trigger(BQ_DATE)
    assert (result.exit_code, result.requests_published) == (0, counts.pending), result.error
    messages = _pull_all("bq-e2e", "worker", counts.pending)
    assert len({m.attributes["player_lookup"] for m in messages}) == counts.pending
    wh = connect(settings)
    try:
        rows = ledger.requests(wh, BQ_DATE)
        coverage = marts.coverage(wh, BQ_DATE)
    finally:
        wh.close()
    published = [r for r in rows if r["batch_id"] == result.batch_id]
    assert len(published) == counts.pending
    assert all(r["message_id"] for r in published)
    assert coverage["players_pending"] == 0
    assert coverage["players_in_flight"] == counts.in_flight + counts.pending
    again = BigQueryDispatcher(settings).retry(BQ_DATE)
    assert (again.outcome, again.requests_published) == ("nothing_pending", 0)


def test_dispatch_commands_run_without_importing_pandas(settings):
    """DuckDB would import pandas (80 MB) on the first parameterised query."""
    code = (
        "import sys\n"
        "from dispatcher.cli import cli\n"
        "cli(['plan', '--game-date', sys.argv[1], '--json'], standalone_mode=False)\n"
        "print('pandas imported:', 'pandas' in sys.modules)\n"
    )
    env = {**os.environ, "DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path),
           "DISPATCHER_WAREHOUSE": "duckdb", "DISPATCHER_TRANSPORT": "local"}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code, str(GAME_DATE)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert '"outcome": "would_publish"' in out.stdout
    assert "pandas imported: False" in out.stdout
