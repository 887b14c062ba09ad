"""`dispatcher serve`: the HTTP routes on Flask's test client, `Dispatcher.start_check`
with a fixed clock, and the real thing under gunicorn (the installed `dispatcher`)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import subprocess
import time

import pytest
from serving import DISPATCHER, call, log_lines, serve_env, start_serve
from warehouses import build_template, copy_of

from dispatcher import ledger
from dispatcher.config import ConfigError
from dispatcher.dispatch import Dispatcher
from dispatcher.events import MAX_EVENT_BYTES
from dispatcher.sandbox.slate import SlateSpec
from dispatcher.serve import MAX_BODY_BYTES, ServeSettings, create_app, resolve_port
from dispatcher.warehouse import connect

READY = dt.date(2026, 11, 28)  # Phase 4 ready, players pending
PARTIAL = dt.date(2026, 11, 27)  # 74 ready: not ready, not critical
CRITICAL = dt.date(2026, 11, 26)  # nobody ready
NO_GAME = dt.date(2026, 11, 25)  # nothing on the schedule
SPECS = {
    READY: SlateSpec(game_date=READY, share_predicted=0.3, share_in_flight=0.1, seed=7),
    PARTIAL: SlateSpec(game_date=PARTIAL, share_production_ready=0.2, seed=9),
    CRITICAL: SlateSpec(game_date=CRITICAL, share_production_ready=0.0, seed=8),
}
#: "Now" for the app: 06:10 PT on the ready date.
NOW = dt.datetime(2026, 11, 28, 14, 10, tzinfo=dt.UTC)
NO_AUTH = ServeSettings()


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(tmp_path_factory.mktemp("serve"), SPECS.values())


@pytest.fixture
def settings(template, tmp_path):
    return copy_of(template, tmp_path)


@pytest.fixture
def client(settings):
    app = create_app(settings, push=NO_AUTH, now=lambda: NOW)
    return app.test_client()


def envelope(event: dict | bytes | str, message_id: str = "m-1") -> dict:
    raw = event if isinstance(event, bytes) else (
        event.encode() if isinstance(event, str) else json.dumps(event).encode()
    )  # fmt: skip
    return {
        "message": {
            "data": base64.b64encode(raw).decode(), "attributes": {"source": "phase4"},
            "messageId": message_id, "message_id": message_id,
            "publishTime": "2026-11-28T08:31:00Z", "publish_time": "2026-11-28T08:31:00Z",
        },
        "subscription": "projects/nba/subscriptions/nba-phase5-trigger-sub",
    }  # fmt: skip


def footprint(settings) -> tuple[int, int, int]:
    """(ledger rows, outbox rows, run-log rows) in the whole file."""
    wh = connect(settings)
    try:
        return tuple(
            wh.query(f"select count(*) as n from nba_orchestration.{table}")[0]["n"]
            for table in ("request_ledger", "request_outbox", "dispatch_runs")
        )  # type: ignore[return-value]
    finally:
        wh.close()


def runs(settings, game_date) -> list[dict]:
    wh = connect(settings)
    try:
        return wh.query(
            "select command, trigger_source, outcome, exit_code, requests_published"
            " from nba_orchestration.dispatch_runs where game_date = @game_date"
            " order by started_at",
            {"game_date": game_date},
        )
    finally:
        wh.close()


# -- POST /trigger -----------------------------------------------------------------------


def test_push_dispatches_every_pending_player_and_a_redelivery_publishes_nothing(
    client, settings
):
    pending = SPECS[READY].counts().pending
    first = client.post("/trigger", json=envelope({"event_type": "phase4_complete",
                                                   "game_date": str(READY)}))  # fmt: skip
    assert first.status_code == 200, first.json
    assert first.content_type == "application/json"
    assert (first.json["outcome"], first.json["requests_published"]) == ("dispatched", pending)
    assert first.json["trigger_source"] == "pubsub"
    after_first = footprint(settings)
    assert after_first[1] == pending

    again = client.post("/trigger", json=envelope({"game_date": str(READY)}))  # same messageId
    assert again.status_code == 200  # acknowledged: Pub/Sub stops redelivering
    assert (again.json["outcome"], again.json["requests_published"]) == ("nothing_pending", 0)
    assert footprint(settings)[:2] == after_first[:2]
    assert [r["trigger_source"] for r in runs(settings, READY)] == ["pubsub", "pubsub"]


MALFORMED = [
    ("not JSON", b"{nope", "body"),
    ("a JSON array", b"[1, 2]", "body"),
    ("no message", {"subscription": "s"}, "message"),
    ("message not an object", {"message": "hello"}, "message"),
    ("no data", {"message": {"messageId": "1"}}, "message.data"),
    ("data not base64", {"message": {"data": "%%%not base64%%%"}}, "message.data"),
    ("event not JSON", envelope("game_date=2026-11-28"), "message.data"),
    ("event without game_date", envelope({"event_type": "phase4_complete"}), "message.data"),
    ("impossible date", envelope({"game_date": "2026-02-30"}), "message.data"),
    ("date as a number", envelope({"game_date": 20261128}), "message.data"),
    ("too far ahead", envelope({"game_date": "2027-06-01"}), "message.data"),
    ("unknown field", envelope({"game_date": str(READY), "force": True}), "message.data"),
    ("SQL-looking date", envelope({"game_date": "2026-11-28'; drop table x;--"}),
     "message.data"),
    ("wrong event type", envelope({"game_date": str(READY), "event_type": "phase3_done"}),
     "message.data"),
    ("negative count", envelope({"game_date": str(READY), "players_ready": -1}),
     "message.data"),
]  # fmt: skip


@pytest.mark.parametrize("name", [case[0] for case in MALFORMED])
def test_malformed_push_is_400_naming_the_field_and_changes_nothing(client, settings, name):
    _, body, field = next(case for case in MALFORMED if case[0] == name)
    before = footprint(settings)
    if isinstance(body, bytes):
        response = client.post("/trigger", data=body, content_type="application/json")
    else:
        response = client.post("/trigger", json=body)
    assert response.status_code == 400, response.json
    assert response.json["field"] == field
    assert response.json["error"] and "\n" not in response.json["error"]
    assert footprint(settings) == before  # no claim, no outbox row, no run-log row


def test_oversized_bodies_are_413(client, settings):
    before = footprint(settings)
    huge = client.post("/trigger", data=b"x" * (MAX_BODY_BYTES + 1),
                       content_type="application/json")  # fmt: skip
    assert huge.status_code == 413 and huge.content_type == "application/json"
    assert "larger than" in huge.json["error"]
    # Under the body limit, but the decoded event is over the event limit.
    padded = {"game_date": str(READY), "run_id": "r" * MAX_EVENT_BYTES}
    big_event = client.post("/trigger", json=envelope(padded))
    assert big_event.status_code == 413
    assert footprint(settings) == before


def test_every_answer_is_json(client):
    missing = client.get("/nowhere")
    assert (missing.status_code, missing.content_type) == (404, "application/json")
    assert missing.json["status"] == 404
    wrong = client.get("/trigger")
    assert (wrong.status_code, wrong.content_type) == (405, "application/json")


def test_a_fault_is_500_with_a_json_body(settings):
    class Broken(Dispatcher):
        def trigger(self, game_date, *, trigger_source="manual"):
            raise RuntimeError("warehouse on fire")

    app = create_app(settings, dispatcher=Broken(settings), push=NO_AUTH, now=lambda: NOW)
    response = app.test_client().post("/trigger", json=envelope({"game_date": str(READY)}))
    assert response.status_code == 500
    assert response.json["error"] == "RuntimeError: warehouse on fire"


def test_a_run_that_errors_is_500_with_its_result(tmp_path):
    from dispatcher.config import Settings

    broken = tmp_path / "warehouse.duckdb"
    broken.write_text("not a warehouse")
    app = create_app(Settings(duckdb_path=broken), push=NO_AUTH, now=lambda: NOW)
    response = app.test_client().post("/retry", json={"game_date": str(READY)})
    assert response.status_code == 500
    assert "error" in response.json


def test_a_critical_date_is_503(client, settings):
    before = footprint(settings)
    response = client.post("/trigger", json=envelope({"game_date": str(CRITICAL)}))
    assert response.status_code == 503
    assert (response.json["outcome"], response.json["requests_published"]) == ("critical", 0)
    assert footprint(settings)[:2] == before[:2]


def test_a_date_without_games_is_200(client):
    response = client.post("/trigger", json=envelope({"game_date": str(NO_GAME)}))
    assert (response.status_code, response.json["outcome"]) == (200, "no_games")


# -- Scheduler routes --------------------------------------------------------------------


def test_scheduler_bodies_are_json_whatever_the_content_type(client, settings):
    body = json.dumps({"game_date": str(READY)}).encode()
    response = client.post("/retry", data=body, content_type="application/octet-stream")
    assert response.status_code == 200, response.json
    assert response.json["outcome"] == "dispatched"
    assert response.json["trigger_source"] == "scheduler"
    status = client.post("/status", data=body)  # no Content-Type at all
    assert (status.status_code, status.json["outcome"]) == (200, "sla_breach")
    assert [(r["command"], r["trigger_source"]) for r in runs(settings, READY)] == [
        ("retry", "scheduler"), ("status", "scheduler"),
    ]  # fmt: skip


def test_scheduler_date_defaults_to_today_in_pacific_time(client):
    response = client.post("/retry")  # NOW is 06:10 PT on READY
    assert response.status_code == 200
    assert response.json["game_date"] == str(READY)
    empty = client.post("/status", json={})
    assert empty.json["game_date"] == str(READY)


@pytest.mark.parametrize(
    "body, field",
    [
        (b"game_date=2026-11-28", "body"),
        (b'"2026-11-28"', "body"),
        (b'{"game_date": "2026-13-01"}', "game_date"),
        (b'{"game_date": 20261128}', "game_date"),
        (b'{"game_date": "2026-11-28", "force": true}', "force"),
    ],
)
def test_scheduler_routes_refuse_bad_bodies(client, settings, body, field):
    before = footprint(settings)
    for route in ("/start", "/retry", "/status"):
        response = client.post(route, data=body, content_type="application/octet-stream")
        assert response.status_code == 400, (route, response.json)
        assert response.json["field"] == field
    assert footprint(settings) == before


def _schedule_header(at: dt.datetime) -> dict[str, str]:
    return {"X-CloudScheduler": "true", "X-CloudScheduler-JobName": "phase5-start",
            "X-CloudScheduler-ScheduleTime": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}  # fmt: skip


def test_start_while_waiting_is_503_with_retry_after_and_claims_nothing(client, settings):
    before = footprint(settings)
    scheduled = NOW - dt.timedelta(minutes=10)  # 20 of the 30 minutes left
    response = client.post("/start", json={"game_date": str(PARTIAL)},
                           headers=_schedule_header(scheduled))  # fmt: skip
    assert response.status_code == 503
    assert response.json["outcome"] == "waiting"
    assert response.json["players_ready"] == SPECS[PARTIAL].counts().ready
    assert response.headers["Retry-After"] == "60"
    ledger_rows, outbox_rows, run_rows = footprint(settings)
    assert (ledger_rows, outbox_rows) == before[:2]
    assert runs(settings, PARTIAL) == [{"command": "start", "trigger_source": "scheduler",
                                        "outcome": "waiting", "exit_code": 3,
                                        "requests_published": 0}]  # fmt: skip


def test_start_after_the_wait_dispatches_partially(client, settings):
    late = client.post("/start", json={"game_date": str(PARTIAL)},
                       headers=_schedule_header(NOW - dt.timedelta(minutes=31)))  # fmt: skip
    assert late.status_code == 200, late.json
    assert late.json["outcome"] == "partial"
    assert late.json["requests_published"] == SPECS[PARTIAL].counts().pending


def test_start_without_a_schedule_time_does_not_wait(client):
    response = client.post("/start", json={"game_date": str(PARTIAL)})
    assert (response.status_code, response.json["outcome"]) == (200, "partial")


def test_start_when_ready_dispatches_at_once_and_critical_is_503(client):
    recent = _schedule_header(NOW - dt.timedelta(minutes=1))
    ready = client.post("/start", json={"game_date": str(READY)}, headers=recent)
    assert (ready.status_code, ready.json["outcome"]) == (200, "dispatched")
    waiting = client.post("/start", json={"game_date": str(CRITICAL)}, headers=recent)
    assert (waiting.status_code, waiting.json["outcome"]) == (503, "waiting")
    over = _schedule_header(NOW - dt.timedelta(hours=2))
    critical = client.post("/start", json={"game_date": str(CRITICAL)}, headers=over)
    assert (critical.status_code, critical.json["outcome"]) == (503, "critical")
    assert "Retry-After" not in critical.headers


def test_start_refuses_a_bad_schedule_time(client):
    response = client.post("/start", json={"game_date": str(PARTIAL)},
                           headers={"X-CloudScheduler-ScheduleTime": "yesterday"})  # fmt: skip
    assert response.status_code == 400
    assert response.json["field"] == "X-CloudScheduler-ScheduleTime"


# -- Dispatcher.start_check, a fixed clock -----------------------------------------------


def test_start_check_waits_until_the_wait_is_over(settings):
    dispatcher = Dispatcher(settings)
    scheduled = dt.datetime(2026, 11, 27, 14, 0, tzinfo=dt.UTC)

    def check(minutes_later: float):
        return dispatcher.start_check(
            PARTIAL, scheduled_at=scheduled, wait_minutes=30,
            now=scheduled + dt.timedelta(minutes=minutes_later),
        )  # fmt: skip

    before = footprint(settings)
    early = check(0)
    assert (early.outcome, early.exit_code, early.retry_after_seconds) == ("waiting", 3, 60)
    assert early.requests_published == 0 and early.batch_id is None
    nearly = check(29.5)
    assert (nearly.outcome, nearly.retry_after_seconds) == ("waiting", 30)
    assert nearly.as_json()["retry_after_seconds"] == 30
    assert footprint(settings)[:2] == before[:2]  # waiting claims nothing
    over = check(30)
    assert (over.outcome, over.exit_code) == ("partial", 0)
    assert over.requests_published == SPECS[PARTIAL].counts().pending
    assert "retry_after_seconds" not in over.as_json()
    wh = connect(settings)
    try:
        assert len(ledger.requests(wh, PARTIAL)) == over.requests_published
    finally:
        wh.close()
    assert [r["outcome"] for r in runs(settings, PARTIAL)] == ["waiting", "waiting", "partial"]


def test_start_check_without_a_schedule_time_and_on_a_day_without_games(settings):
    dispatcher = Dispatcher(settings)
    now = dt.datetime(2026, 11, 27, 14, 0, tzinfo=dt.UTC)
    manual = dispatcher.start_check(CRITICAL, scheduled_at=None, wait_minutes=30, now=now)
    assert (manual.outcome, manual.exit_code) == ("critical", 3)
    quiet = dispatcher.start_check(NO_GAME, scheduled_at=now, wait_minutes=30, now=now)
    assert (quiet.outcome, quiet.exit_code, quiet.alerts) == ("no_games", 0, [])


# -- GET /health ---------------------------------------------------------------------------


def test_health_says_whether_the_warehouse_answers(client, tmp_path):
    from dispatcher import __version__
    from dispatcher.config import Settings

    ok = client.get("/health")
    assert ok.status_code == 200
    assert ok.json == {"version": __version__, "warehouse": "duckdb", "status": "ok",
                       "warehouse_ok": True}  # fmt: skip
    gone = create_app(Settings(duckdb_path=tmp_path / "missing.duckdb"), push=NO_AUTH)
    down = gone.test_client().get("/health")
    assert down.status_code == 503
    assert down.json["warehouse_ok"] is False


# -- settings ------------------------------------------------------------------------------


def test_port_comes_from_the_option_then_port_then_8080():
    assert resolve_port(9000, {"PORT": "7000"}) == 9000
    assert resolve_port(None, {"PORT": "7000"}) == 7000
    assert resolve_port(None, {}) == 8080
    assert resolve_port(None, {"PORT": ""}) == 8080
    for bad in ("http", "0", "70000", "-1"):
        with pytest.raises(ConfigError, match="PORT"):
            resolve_port(None, {"PORT": bad})


def test_serve_settings_refuse_an_audience_without_accounts():
    with pytest.raises(ConfigError, match="DISPATCHER_PUSH_SERVICE_ACCOUNTS is required"):
        ServeSettings.from_env({"DISPATCHER_PUSH_AUDIENCE": "https://svc"})
    with pytest.raises(ConfigError, match="without DISPATCHER_PUSH_AUDIENCE"):
        ServeSettings.from_env({"DISPATCHER_PUSH_SERVICE_ACCOUNTS": "a@b.iam"})
    with pytest.raises(ConfigError, match="DISPATCHER_START_WAIT_MINUTES"):
        ServeSettings.from_env({"DISPATCHER_START_WAIT_MINUTES": "soon"})
    push = ServeSettings.from_env({"DISPATCHER_PUSH_AUDIENCE": "https://svc",
                                   "DISPATCHER_PUSH_SERVICE_ACCOUNTS": " B@x.iam , a@x.iam,"})
    assert push.service_accounts == ("a@x.iam", "b@x.iam")
    assert push.start_wait_minutes == 30


@pytest.mark.parametrize(
    "env, says",
    [
        ({"DISPATCHER_PUSH_AUDIENCE": "https://svc"}, "DISPATCHER_PUSH_SERVICE_ACCOUNTS"),
        ({"PORT": "eighty"}, "PORT must be a port number"),
        ({"DISPATCHER_START_WAIT_MINUTES": "-5"}, "DISPATCHER_START_WAIT_MINUTES"),
    ],
)
def test_serve_refuses_bad_settings_before_it_listens(settings, tmp_path, env, says):
    out = subprocess.run([str(DISPATCHER), "serve", *([] if "PORT" in env else ["--port", "1"])],
                         env=serve_env(settings, **env), cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and says in errors[0], out.stderr
    assert "Traceback" not in out.stderr


# -- the real server: gunicorn, the installed `dispatcher` --------------------------------


def test_gunicorn_serves_push_and_stops_gracefully_on_sigterm(settings, tmp_path):
    server = start_serve(tmp_path, serve_env(settings), port_from_env=True)  # PORT, as Cloud Run
    try:
        status, body, _ = call(f"{server.url}/health")
        assert (status, body["warehouse_ok"]) == (200, True)
        status, body, headers = call(f"{server.url}/trigger", "POST",
                                     envelope({"game_date": str(READY)}),
                                     {"Content-Type": "application/json"})  # fmt: skip
        assert status == 200, body
        assert body["requests_published"] == SPECS[READY].counts().pending
        assert headers["Content-Type"] == "application/json"
        status, body, _ = call(f"{server.url}/retry", "POST", b'{"game_date": "2026-11-28"}',
                               {"Content-Type": "application/octet-stream"})  # fmt: skip
        assert (status, body["outcome"]) == (200, "nothing_pending")
        status, body, _ = call(f"{server.url}/nope")
        assert (status, body["status"]) == (404, 404)
    finally:
        os.kill(server.pid, signal.SIGTERM)  # the arbiter: it stops its workers gracefully
        started = time.monotonic()
        try:
            code = server.process.wait(timeout=40) if server.process else None
        except subprocess.TimeoutExpired:
            code = None
        stopped_in = time.monotonic() - started
        server.stop()  # whatever is left of its process group
    assert code == 0
    assert stopped_in < 35
    lines = log_lines(server)[1:]  # the first line is the command
    entries = [json.loads(line) for line in lines]  # every line is JSON
    assert any(e["message"].startswith("Listening at:") for e in entries)
    assert any(e["message"] == "POST /trigger 200" and e.get("message_id") == "m-1"
               for e in entries)  # fmt: skip
    assert any("Shutting down" in e["message"] for e in entries)


def test_concurrent_pushes_of_one_event_publish_each_player_once(settings, tmp_path):
    """Four threads of one gunicorn worker, the same event pushed eight times at once."""
    from concurrent.futures import ThreadPoolExecutor

    server = start_serve(tmp_path, serve_env(settings), args=("--threads", "4"))
    try:
        def push(n: int):
            return call(f"{server.url}/trigger", "POST",
                        envelope({"game_date": str(READY)}, message_id="same"),
                        {"Content-Type": "application/json"})  # fmt: skip

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(push, range(8)))
    finally:
        server.stop()
    assert [status for status, _, _ in answers] == [200] * 8, answers
    published = sorted(body["requests_published"] for _, body, _ in answers)
    pending = SPECS[READY].counts().pending
    assert sum(published) == pending and published[-1] == pending
    wh = connect(settings)
    try:
        rows = wh.query(
            "select count(*) as n, count(distinct data::json->>'player_lookup') as players"
            " from nba_orchestration.request_outbox where game_date = @game_date",
            {"game_date": READY},
        )
    finally:
        wh.close()
    assert rows == [{"n": pending, "players": pending}]


def test_concurrent_health_checks_all_find_the_warehouse(settings, tmp_path):
    """Threads opening and closing one DuckDB file at once raced in DuckDB's instance
    cache ("Unique file handle conflict"): about one /health in five answered 503."""
    from concurrent.futures import ThreadPoolExecutor

    server = start_serve(tmp_path, serve_env(settings), args=("--threads", "4"))
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(
                lambda _n: call(f"{server.url}/health", "GET", None, {}), range(400)
            ))  # fmt: skip
    finally:
        server.stop()
    statuses = [status for status, _, _ in answers]
    assert statuses == [200] * 400, {code: statuses.count(code) for code in set(statuses)}


def test_help_of_serve_names_the_port_rule():
    out = subprocess.run([str(DISPATCHER), "serve", "--help"], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    assert "$PORT" in out.stdout and "--workers" in out.stdout and "--threads" in out.stdout
