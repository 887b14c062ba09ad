"""Alerts that reach people, end to end: the installed `dispatcher`, one process per
command as Cloud Run and the Scheduler run it, configured only by its environment, sends
to a Slack webhook stand-in and a real SMTP server (aiosmtpd, STARTTLS and AUTH) on
127.0.0.1. The tests assert what the servers received, message by message, while the
slate changes; that a failing channel changes no exit code; and that no secret leaves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alert_servers import SMTP_PASSWORD, SMTP_USER
from alert_slate import GAME_DATE, SPEC, drain, make_ready, query
from warehouses import build_template, copy_of

DISPATCHER = str(Path(sys.executable).with_name("dispatcher"))
WEBHOOK_SECRET = "T0E2E/B0E2E/sentinel-e2e-webhook-77f1"
DATE = ["--game-date", GAME_DATE.isoformat()]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(tmp_path_factory.mktemp("alerts-e2e"), [SPEC])


def _environ(settings, slack=None, smtp=None, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update({
        "DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path),
        "DISPATCHER_DBT_TARGET_PATH": str(settings.dbt_target_path),
        "DISPATCHER_LOG_FORMAT": "json",
    })  # fmt: skip
    if slack is not None:
        env["DISPATCHER_SLACK_WEBHOOK_URL"] = slack.webhook_url(WEBHOOK_SECRET)
    if smtp is not None:
        env.update({
            "DISPATCHER_SMTP_HOST": smtp.host,
            "DISPATCHER_SMTP_PORT": str(smtp.port),
            "DISPATCHER_SMTP_USERNAME": SMTP_USER,
            "DISPATCHER_SMTP_PASSWORD": SMTP_PASSWORD,
            "DISPATCHER_ALERT_EMAIL_FROM": "dispatcher@nba.test",
            "DISPATCHER_ALERT_EMAIL_TO": "oncall@nba.test, analysts@nba.test",
        })  # fmt: skip
    env.update(extra)
    return env


def _run(env, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [DISPATCHER, *args, "--json", *DATE], env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    for secret in (WEBHOOK_SECRET, SMTP_PASSWORD):
        assert secret not in out.stdout + out.stderr, f"{secret} leaked by {args}"
    return out


def _headings(slack) -> list[str]:
    out = [request.body["blocks"][0]["text"]["text"] for request in slack.requests]
    slack.requests.clear()
    return out


def _subjects(smtp) -> list[str]:
    out = [mail.message["Subject"] for mail in smtp.messages]
    smtp.messages.clear()
    return out


def test_the_on_call_engineer_is_told_once_per_change(template, tmp_path, slack_server,
                                                      smtp_tls_server):  # fmt: skip
    settings = copy_of(template, tmp_path)
    env = _environ(settings, slack_server, smtp_tls_server)
    critical = f"[critical] Phase 4 insufficient for {GAME_DATE}"
    partial = f"[warning] Partial dispatch for {GAME_DATE}"

    refused = _run(env, "trigger", "--trigger-source", "pubsub")
    assert refused.returncode == 3, refused.stderr[-2000:]
    assert _headings(slack_server) == [critical]
    [mail] = smtp_tls_server.messages
    assert _subjects(smtp_tls_server) == [critical]
    # What the engineer reads: the date, the numbers, the command to run next.
    expected = SPEC.counts().expected
    assert mail.tls and mail.login == SMTP_USER
    assert mail.rcpt_tos == ["oncall@nba.test", "analysts@nba.test"]
    assert mail.message["X-Dispatcher-Game-Date"] == GAME_DATE.isoformat()
    assert (mail.message["X-Dispatcher-Rule"], mail.message["X-Dispatcher-Kind"]) == (
        "phase4_critical", "new",
    )  # fmt: skip
    assert f"0 players ready (< 50) of {expected} expected" in mail.body
    assert f"dispatcher plan --game-date {GAME_DATE}" in mail.body
    [alert] = json.loads(refused.stdout)["alerts"]
    assert alert["channels"] == {"log": "sent", "slack": "sent", "email": "sent"}

    # The event redelivered, the 06:00 start: the same breach, nobody paged again.
    assert _run(env, "trigger", "--trigger-source", "pubsub").returncode == 3
    assert _run(env, "start", "--wait-minutes", "0").returncode == 3
    assert (_headings(slack_server), _subjects(smtp_tls_server)) == ([], [])

    make_ready(settings, 0.85)  # Phase 4 catches up, 15 % still not ready
    assert _run(env, "retry", "--trigger-source", "scheduler").returncode == 0
    sent = [f"[resolved] Phase 4 insufficient for {GAME_DATE}", partial]
    assert _headings(slack_server) == sent
    assert _subjects(smtp_tls_server) == sent
    drain(settings)

    make_ready(settings, 1.0)  # the rest arrives: the 06:30 retry completes the dispatch
    assert _run(env, "retry", "--trigger-source", "scheduler").returncode == 0
    resolved = [f"[resolved] Partial dispatch for {GAME_DATE}"]
    assert (_headings(slack_server), _subjects(smtp_tls_server)) == (resolved, resolved)
    drain(settings)

    # 07:00: every player predicted, nothing to say, however often it is asked.
    for _ in range(2):
        status = _run(env, "status", "--trigger-source", "scheduler")
        assert (status.returncode, json.loads(status.stdout)["alerts"]) == (0, [])
    assert (_headings(slack_server), _subjects(smtp_tls_server)) == ([], [])
    rows = query(
        settings,
        "select channel, status, count(*) as n from nba_orchestration.alert_log"
        " where game_date = @game_date group by channel, status order by channel, status",
    )
    assert [(r["channel"], r["status"], r["n"]) for r in rows] == [
        ("email", "sent", 4), ("email", "suppressed", 2), ("log", "sent", 4),
        ("log", "suppressed", 2), ("slack", "sent", 4), ("slack", "suppressed", 2),
    ]  # fmt: skip


def test_levels_are_configuration(template, tmp_path, slack_server, smtp_server):
    settings = copy_of(template, tmp_path)
    env = _environ(
        settings, slack_server, smtp_server, DISPATCHER_SMTP_STARTTLS="false",
        DISPATCHER_SMTP_USERNAME="", DISPATCHER_SMTP_PASSWORD="",
        DISPATCHER_ALERT_SLACK_LEVELS="critical",
    )  # fmt: skip
    make_ready(settings, 0.85)
    assert _run(env, "trigger").returncode == 0
    assert _headings(slack_server) == []  # a warning: email only
    assert _subjects(smtp_server) == [f"[warning] Partial dispatch for {GAME_DATE}"]


@pytest.mark.parametrize("failure", ["error", "hang", "refused"])
def test_a_failing_slack_never_changes_the_dispatch(template, tmp_path, slack_server,
                                                    smtp_server, refused_port,
                                                    failure):  # fmt: skip
    settings = copy_of(template, tmp_path)
    extra = {"DISPATCHER_SMTP_STARTTLS": "false", "DISPATCHER_SMTP_USERNAME": "",
             "DISPATCHER_SMTP_PASSWORD": ""}  # fmt: skip
    env = _environ(settings, slack_server, smtp_server, **extra)
    if failure == "refused":
        env["DISPATCHER_SLACK_WEBHOOK_URL"] = (
            f"http://127.0.0.1:{refused_port}/services/{WEBHOOK_SECRET}"
        )
    slack_server.mode = failure if failure != "refused" else "ok"
    make_ready(settings, 0.85)
    t0 = time.monotonic()
    out = _run(env, "trigger")
    elapsed = time.monotonic() - t0
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["outcome"] == "dispatched" and result["requests_published"] > 0
    [alert] = result["alerts"]
    assert alert["channels"] == {"log": "sent", "slack": "failed", "email": "sent"}
    assert elapsed < 120  # three bounded attempts, not a hang
    assert _subjects(smtp_server) == [f"[warning] Partial dispatch for {GAME_DATE}"]
    [failed] = query(
        settings, "select error_message from nba_orchestration.alert_log where status = 'failed'"
    )
    assert failed["error_message"].startswith("slack: ")
    # Slack is back: the next run sends what failed, and only to Slack.
    slack_server.mode, slack_server.requests[:] = "ok", []
    env["DISPATCHER_SLACK_WEBHOOK_URL"] = slack_server.webhook_url(WEBHOOK_SECRET)
    assert _run(env, "retry").returncode == 0
    assert _headings(slack_server) == [f"[warning] Partial dispatch for {GAME_DATE}"]
    assert _subjects(smtp_server) == []


def test_a_failing_smtp_server_never_changes_the_dispatch(template, tmp_path,
                                                          smtp_black_hole):  # fmt: skip
    settings = copy_of(template, tmp_path)
    env = _environ(
        settings, DISPATCHER_SMTP_HOST="127.0.0.1", DISPATCHER_SMTP_PORT=str(smtp_black_hole),
        DISPATCHER_SMTP_STARTTLS="false", DISPATCHER_ALERT_EMAIL_FROM="d@nba.test",
        DISPATCHER_ALERT_EMAIL_TO="oncall@nba.test",
    )  # fmt: skip
    out = _run(env, "trigger")
    assert out.returncode == 3  # the critical refusal, not a channel error
    [alert] = json.loads(out.stdout)["alerts"]
    assert alert["channels"] == {"log": "sent", "email": "failed"}


def test_a_bad_alert_setting_stops_the_command_at_start(template, tmp_path):
    settings = copy_of(template, tmp_path)
    env = _environ(settings, DISPATCHER_SMTP_HOST="127.0.0.1")  # no FROM, no TO
    out = _run(env, "trigger")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "Error: DISPATCHER_ALERT_EMAIL_FROM is required with DISPATCHER_SMTP_HOST"
    ]
    assert query(settings, "select * from nba_orchestration.request_ledger"
                 " where game_date = @game_date and published_at is not null") == []  # fmt: skip
