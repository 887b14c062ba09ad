"""The Slack and email channels against real servers on 127.0.0.1 (tests/alert_servers.py):
what each received, the retries, every way they fail (within a bound, as a ChannelError
that never carries the webhook URL or the SMTP password), and the routes the settings
make, including `dispatcher config` refusing a bad alert setting.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alert_servers import SMTP_PASSWORD, SMTP_USER
from click.testing import CliRunner

from alerts import Alert
from alerts.channels import (
    ChannelError,
    Route,
    TransientError,
    configured_routes,
    log_channel,
    with_retries,
)
from alerts.email import EmailChannel
from alerts.slack import SlackChannel
from dispatcher import logs
from dispatcher.cli import cli
from dispatcher.config import ConfigError

# aiosmtpd itself sets the attribute it deprecates when a login succeeds.
pytestmark = pytest.mark.filterwarnings("ignore:Session.login_data is deprecated")

DISPATCHER = Path(sys.executable).with_name("dispatcher")
SECRET_PATH = "T0000/B0000/sentinel-webhook-secret-8d2c"
#: Small timeouts and pauses, so a failing channel gives up soon; the bounds asserted
#: are generous (attempts x timeout + pauses + 10 s) for a busy machine.
TIMEOUT = 0.5
ATTEMPTS = 3
BACKOFF = 0.05
BOUND = ATTEMPTS * TIMEOUT + 2 * BACKOFF * (2 ** (ATTEMPTS - 1) - 1) + 10
SENDER = "nba-dispatcher@example.com"
RECIPIENTS = ["oncall@example.com", "data-eng@example.com"]

ALERT = Alert(
    game_date=dt.date(2026, 11, 28),
    rule="phase4_critical",
    level="critical",
    message="Phase 4 has 212 of 260 expected players for 2026-11-28 (81.5%); 48 missing.",
    kind="new",
    title="Phase 4 insufficient for 2026-11-28",
    next_command="dispatcher plan --game-date 2026-11-28",
    numbers={"players_expected": 260, "players_missing": 48, "coverage_pct": 81.54,
             "minutes_to_first_request": 95},
)  # fmt: skip


def _slack(url: str, **kwargs) -> SlackChannel:
    return SlackChannel(url, **{"timeout": TIMEOUT, "attempts": ATTEMPTS, "backoff": BACKOFF,
                                **kwargs})  # fmt: skip


def _email(server_or_port, **kwargs) -> EmailChannel:
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    options = {"sender": SENDER, "recipients": RECIPIENTS, "starttls": False,
               "timeout": TIMEOUT, "attempts": ATTEMPTS, "backoff": BACKOFF, **kwargs}  # fmt: skip
    return EmailChannel("127.0.0.1", port, **options)


def _fails(channel, alert: Alert = ALERT) -> str:
    """Deliver, expecting a ChannelError within BOUND; its text."""
    started = time.monotonic()
    with pytest.raises(ChannelError) as caught:
        channel(alert)
    assert time.monotonic() - started < BOUND
    text = str(caught.value)
    assert "\n" not in text
    # No library exception (which may quote the URL) rides along in the traceback.
    error = caught.value
    assert error.__cause__ is None and (error.__suppress_context__ or error.__context__ is None)
    return text


@pytest.fixture
def json_logs():
    previous = logs.configure(logs.LogConfig(format="json"))
    yield
    logs.configure(previous)


def _never_says(secret: str, text: str, capsys, caplog) -> None:
    """The secret is in none of: the error, stdout/stderr, and any log record (at any
    level) but the stand-in SMTP server's own ("mail.log")."""
    out, err = capsys.readouterr()
    records = [f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
               if not r.name.startswith("mail.log")]  # fmt: skip
    for where in (text, out, err, *records):
        assert secret not in where


# -- Slack: what it receives -------------------------------------------------------------


def test_slack_receives_text_and_blocks(slack_server):
    _slack(slack_server.webhook_url(SECRET_PATH))(ALERT)
    [request] = slack_server.requests
    assert request.path == f"/services/{SECRET_PATH}"
    assert request.headers["Content-Type"].startswith("application/json")
    body = request.body
    assert body["text"].splitlines() == [
        "[critical] Phase 4 insufficient for 2026-11-28", ALERT.message,
        "Next: `dispatcher plan --game-date 2026-11-28`",
    ]  # fmt: skip
    header, section, fields, context = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": ALERT.heading}}
    assert section["text"] == {"type": "mrkdwn", "text": ALERT.message}
    shown = dict(f["text"].split("\n") for f in fields["fields"])
    assert shown == {
        "*Game date*": "2026-11-28", "*Rule*": "phase4_critical", "*Level*": "critical",
        "*Kind*": "new", "*Players expected*": "260", "*Players missing*": "48",
        "*Coverage pct*": "81.5%", "*Minutes to first request*": "95",
    }  # fmt: skip
    assert context == {"type": "context", "elements": [
        {"type": "mrkdwn", "text": "Next: `dispatcher plan --game-date 2026-11-28`"}]}  # fmt: skip


def test_slack_resolved_heading_and_no_next_command(slack_server):
    resolved = Alert(ALERT.game_date, "coverage", "warning", "Coverage is back to 100%.",
                     kind="resolved", title="Coverage recovered for 2026-11-28")  # fmt: skip
    _slack(slack_server.webhook_url())(resolved)
    body = slack_server.requests[0].body
    assert body["text"] == "[resolved] Coverage recovered for 2026-11-28\nCoverage is back to 100%."
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "section"]
    assert body["blocks"][0]["text"]["text"] == "[resolved] Coverage recovered for 2026-11-28"


def test_slack_escapes_its_control_characters(slack_server):
    alert = Alert(ALERT.game_date, "latency", "warning", "p99 > 30 min & <rising>",
                  title="Latency")  # fmt: skip
    _slack(slack_server.webhook_url())(alert)
    assert slack_server.requests[0].body["blocks"][1]["text"]["text"] == (
        "p99 &gt; 30 min &amp; &lt;rising&gt;"
    )


# -- Slack: retries and failures ---------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
def test_slack_retries_a_flaky_server_until_it_answers(slack_server, status):
    slack_server.mode, slack_server.status, slack_server.failures = "flaky", status, 2
    slack_server.retry_after = "0" if status == 429 else None
    _slack(slack_server.webhook_url())(ALERT)
    assert len(slack_server.requests) == 3
    assert all(r.body == slack_server.requests[0].body for r in slack_server.requests)


def test_slack_500_fails_after_every_attempt(slack_server, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    slack_server.mode = "error"
    text = _fails(_slack(slack_server.webhook_url(SECRET_PATH)))
    assert text == "slack: HTTP 500 internal_error (3 attempts)"
    assert len(slack_server.requests) == ATTEMPTS
    _never_says(SECRET_PATH, text, capsys, caplog)


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_slack_other_4xx_is_not_retried(slack_server, status):
    slack_server.mode, slack_server.status = "error", status
    text = _fails(_slack(slack_server.webhook_url()))
    assert text == f"slack: HTTP {status} no_service (not retried)"
    assert len(slack_server.requests) == 1


def test_slack_hanging_server_times_out_each_attempt(slack_server, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    slack_server.mode = "hang"
    text = _fails(_slack(slack_server.webhook_url(SECRET_PATH)))
    assert text == f"slack: no answer within {TIMEOUT:g} s ({ATTEMPTS} attempts)"
    assert len(slack_server.requests) == ATTEMPTS
    _never_says(SECRET_PATH, text, capsys, caplog)


def test_slack_refused_port(refused_port, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    text = _fails(_slack(f"http://127.0.0.1:{refused_port}/services/{SECRET_PATH}"))
    assert text == f"slack: connection refused ({ATTEMPTS} attempts)"
    _never_says(SECRET_PATH, text, capsys, caplog)


def test_slack_url_is_never_in_a_repr_or_a_route():
    channel = SlackChannel(f"https://hooks.slack.com/services/{SECRET_PATH}")
    assert SECRET_PATH not in repr(channel)
    assert SECRET_PATH not in repr(Route("slack", channel, frozenset({"critical"})))


def test_slack_does_not_import_at_cli_start():
    code = (
        "import sys\nfrom dispatcher.cli import cli\nimport alerts.channels\n"
        "try:\n    cli(['config'])\nexcept SystemExit:\n    pass\n"
        "print('SLACK:' + ','.join(m for m in sys.modules if m.startswith('slack_sdk')))"
    )
    env = {**_clean_env(), "DISPATCHER_SLACK_WEBHOOK_URL": "https://hooks.slack.com/x"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "SLACK:"


# -- email: what it receives -------------------------------------------------------------


def test_email_receives_subject_body_and_headers(smtp_server):
    _email(smtp_server)(ALERT)
    [mail] = smtp_server.messages
    assert mail.mail_from == SENDER and mail.rcpt_tos == RECIPIENTS
    assert not mail.tls and mail.login is None
    msg = mail.message
    assert msg["Subject"] == "[critical] Phase 4 insufficient for 2026-11-28"
    assert msg["From"] == SENDER and msg["To"] == ", ".join(RECIPIENTS)
    assert msg["Date"] and msg["Message-ID"].endswith("@example.com>")
    headers = [msg[f"X-Dispatcher-{name}"] for name in ("Game-Date", "Rule", "Level", "Kind")]
    assert headers == ["2026-11-28", "phase4_critical", "critical", "new"]
    assert msg.get_content_type() == "text/plain"
    body = mail.body
    assert body.startswith(ALERT.message + "\n")
    for line in ("Game date: 2026-11-28", "Rule: phase4_critical", "Level: critical",
                 "Players expected: 260", "Players missing: 48", "Coverage pct: 81.5%",
                 "Minutes to first request: 95",
                 "    dispatcher plan --game-date 2026-11-28"):  # fmt: skip
        assert line in body.splitlines()
    assert smtp_server.sessions == 1


def test_email_logs_in(smtp_auth_server):
    _email(smtp_auth_server, username=SMTP_USER, password=SMTP_PASSWORD)(ALERT)
    [mail] = smtp_auth_server.messages
    assert mail.login == SMTP_USER


def test_email_starttls_with_a_certificate_trusted_through_ssl_cert_file(smtp_tls_server):
    """The fixture points SSL_CERT_FILE at its CA: ssl.create_default_context() reads it
    when the channel builds its context, so the certificate is checked, not skipped."""
    _email(smtp_tls_server, starttls=True, username=SMTP_USER, password=SMTP_PASSWORD)(ALERT)
    [mail] = smtp_tls_server.messages
    assert mail.tls and mail.login == SMTP_USER
    assert mail.message["Subject"] == ALERT.heading


def test_email_refuses_a_certificate_it_does_not_trust(smtp_tls_server, monkeypatch, tmp_path):
    empty = tmp_path / "no-cas.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    text = _fails(_email(smtp_tls_server, starttls=True, username=SMTP_USER,
                         password=SMTP_PASSWORD))  # fmt: skip
    assert text == "email: the TLS certificate of 127.0.0.1 is not trusted"
    assert smtp_tls_server.sessions == 1 and smtp_tls_server.auth_attempts == 0
    assert SMTP_PASSWORD not in text


def test_email_wants_starttls_the_server_does_not_offer(smtp_server):
    text = _fails(_email(smtp_server, starttls=True))
    assert "does not offer STARTTLS" in text and "DISPATCHER_SMTP_STARTTLS=false" in text
    assert smtp_server.sessions == 1 and smtp_server.messages == []


# -- email: retries and failures ---------------------------------------------------------


def test_email_retries_transient_replies(smtp_server):
    smtp_server.failures = 2
    _email(smtp_server)(ALERT)
    assert smtp_server.data_calls == 3 and smtp_server.sessions == 3
    assert len(smtp_server.messages) == 1


def test_email_5xx_is_not_retried(smtp_server):
    smtp_server.failures, smtp_server.failure_reply = 5, "554 5.6.0 Message rejected"
    text = _fails(_email(smtp_server))
    assert text == "email: SMTP 554 5.6.0 Message rejected (not retried)"
    assert smtp_server.data_calls == 1 and smtp_server.messages == []


def test_email_4xx_fails_after_every_attempt(smtp_server):
    smtp_server.failures = 10
    text = _fails(_email(smtp_server))
    assert text == f"email: SMTP 451 4.3.0 Try again later ({ATTEMPTS} attempts)"
    assert smtp_server.data_calls == ATTEMPTS


def test_email_some_recipients_refused_is_final(smtp_server):
    """The others have it: sending again would repeat it to them."""
    smtp_server.refused_recipients = {RECIPIENTS[1]: "550 5.1.1 No such user"}
    text = _fails(_email(smtp_server))
    assert text == f"email: sent, but refused for {RECIPIENTS[1]}"
    assert smtp_server.sessions == 1
    assert [m.rcpt_tos for m in smtp_server.messages] == [RECIPIENTS[:1]]


@pytest.mark.parametrize(("reply", "sessions"), [("450 4.2.1 Mailbox busy", ATTEMPTS),
                                                 ("550 5.1.1 No such user", 1)])  # fmt: skip
def test_email_every_recipient_refused(smtp_server, reply, sessions):
    smtp_server.refused_recipients = dict.fromkeys(RECIPIENTS, reply)
    text = _fails(_email(smtp_server))
    assert text.startswith(f"email: every recipient refused ({reply[:3]})")
    assert smtp_server.sessions == sessions and smtp_server.messages == []


def test_email_refused_login_is_final_and_never_quotes_the_password(
    smtp_auth_server, capsys, caplog
):
    caplog.set_level(logging.DEBUG)
    wrong = "sentinel-wrong-password-0a9f"
    text = _fails(_email(smtp_auth_server, username=SMTP_USER, password=wrong))
    assert text == f"email: login refused for {SMTP_USER} (SMTP 535)"
    assert smtp_auth_server.sessions == 1 and smtp_auth_server.messages == []
    _never_says(wrong, text, capsys, caplog)
    assert wrong not in repr(_email(smtp_auth_server, username=SMTP_USER, password=wrong))


def test_email_refused_port(refused_port, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    text = _fails(_email(refused_port, username=SMTP_USER, password=SMTP_PASSWORD))
    assert text == f"email: connection refused ({ATTEMPTS} attempts)"
    _never_says(SMTP_PASSWORD, text, capsys, caplog)


def test_email_black_hole_times_out(smtp_black_hole, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    text = _fails(_email(smtp_black_hole, username=SMTP_USER, password=SMTP_PASSWORD))
    assert text == f"email: no answer within {TIMEOUT:g} s ({ATTEMPTS} attempts)"
    _never_says(SMTP_PASSWORD, text, capsys, caplog)


# -- the retry loop ----------------------------------------------------------------------


def test_with_retries_stops_at_the_first_final_error():
    calls = []

    def attempt():
        calls.append(1)
        if len(calls) == 1:
            raise TransientError("HTTP 503")
        raise ChannelError("slack: HTTP 404 (not retried)")

    with pytest.raises(ChannelError, match="not retried"):
        with_retries("slack", attempt, attempts=5, backoff=0)
    assert len(calls) == 2


def test_with_retries_says_how_many_attempts_it_made():
    with pytest.raises(ChannelError) as caught:
        with_retries("x", lambda: (_ for _ in ()).throw(TransientError("down")), attempts=1,
                     backoff=0)  # fmt: skip
    assert str(caught.value) == "x: down (1 attempt)"


# -- the log channel ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "kind", "severity"),
    [("critical", "new", "ERROR"), ("warning", "worsened", "WARNING"),
     ("critical", "resolved", "INFO")],
)  # fmt: skip
def test_log_channel(json_logs, capsys, level, kind, severity):
    alert = Alert(ALERT.game_date, "coverage", level, "Coverage is 81.5%.", kind=kind,
                  next_command="dispatcher retry --game-date 2026-11-28")  # fmt: skip
    log_channel(alert)
    [line] = capsys.readouterr().err.splitlines()
    entry = json.loads(line)
    assert entry["severity"] == severity and entry["message"] == "Coverage is 81.5%."
    assert (entry["game_date"], entry["alert_rule"], entry["alert_level"],
            entry["alert_kind"]) == ("2026-11-28", "coverage", level, kind)  # fmt: skip
    assert entry["next_command"] == "dispatcher retry --game-date 2026-11-28"


# -- routes from the settings ------------------------------------------------------------


def _clean_env(**env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    environ.update(env)
    return environ


SMTP_ENV = {
    "DISPATCHER_SMTP_HOST": "smtp.example.com",
    "DISPATCHER_ALERT_EMAIL_FROM": SENDER,
    "DISPATCHER_ALERT_EMAIL_TO": " oncall@example.com, data-eng@example.com ,",
}


def test_routes_default_to_the_log_alone():
    [route] = configured_routes({})
    assert route == Route("log", log_channel, frozenset({"warning", "critical"}))


def test_routes_from_the_settings():
    env = {"DISPATCHER_SLACK_WEBHOOK_URL": f"https://hooks.slack.com/services/{SECRET_PATH}",
           "DISPATCHER_ALERT_EMAIL_LEVELS": " Critical ", **SMTP_ENV,
           "DISPATCHER_SMTP_PASSWORD": SMTP_PASSWORD,
           "DISPATCHER_SMTP_USERNAME": SMTP_USER}  # fmt: skip
    routes = configured_routes(env)
    assert [(r.name, r.levels) for r in routes] == [
        ("log", frozenset({"warning", "critical"})),
        ("slack", frozenset({"warning", "critical"})),
        ("email", frozenset({"critical"})),
    ]
    email = routes[2].channel
    assert isinstance(email, EmailChannel) and isinstance(routes[1].channel, SlackChannel)
    assert (email.host, email.port, email.sender, email.recipients) == (
        "smtp.example.com", 587, SENDER, RECIPIENTS)  # fmt: skip
    assert email.starttls is True and email.username == SMTP_USER
    assert SECRET_PATH not in repr(routes) and SMTP_PASSWORD not in repr(routes)


def test_configured_routes_deliver_to_the_servers(slack_server, smtp_server):
    env = {"DISPATCHER_SLACK_WEBHOOK_URL": slack_server.webhook_url(),
           "DISPATCHER_ALERT_SLACK_LEVELS": "critical", **SMTP_ENV,
           "DISPATCHER_SMTP_HOST": "127.0.0.1", "DISPATCHER_SMTP_PORT": str(smtp_server.port),
           "DISPATCHER_SMTP_STARTTLS": "false"}  # fmt: skip
    for route in configured_routes(env)[1:]:
        if ALERT.level in route.levels:
            route.channel(ALERT)
    assert len(slack_server.requests) == 1 and len(smtp_server.messages) == 1
    assert smtp_server.messages[0].rcpt_tos == RECIPIENTS


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"DISPATCHER_SMTP_HOST": "smtp.example.com"},
         "DISPATCHER_ALERT_EMAIL_FROM is required with DISPATCHER_SMTP_HOST"),
        ({**SMTP_ENV, "DISPATCHER_ALERT_EMAIL_TO": " , "},
         "DISPATCHER_ALERT_EMAIL_TO is required with DISPATCHER_SMTP_HOST"),
        ({**SMTP_ENV, "DISPATCHER_ALERT_EMAIL_TO": "oncall"},
         "DISPATCHER_ALERT_EMAIL_TO: 'oncall'"),
        ({**SMTP_ENV, "DISPATCHER_SMTP_PORT": "smtp"}, "DISPATCHER_SMTP_PORT must be a port"),
        ({**SMTP_ENV, "DISPATCHER_SMTP_PORT": "70000"}, "DISPATCHER_SMTP_PORT must be a port"),
        ({**SMTP_ENV, "DISPATCHER_SMTP_STARTTLS": "maybe"}, "DISPATCHER_SMTP_STARTTLS must be"),
        ({**SMTP_ENV, "DISPATCHER_SMTP_PASSWORD": SMTP_PASSWORD},
         "DISPATCHER_SMTP_USERNAME and DISPATCHER_SMTP_PASSWORD are set together"),
        ({"DISPATCHER_ALERT_SLACK_LEVELS": "info"}, "DISPATCHER_ALERT_SLACK_LEVELS must list"),
        ({"DISPATCHER_ALERT_EMAIL_LEVELS": "warning,page"},
         "DISPATCHER_ALERT_EMAIL_LEVELS must list"),
        ({"DISPATCHER_SLACK_WEBHOOK_URL": f"hooks.slack.com/services/{SECRET_PATH}"},
         "DISPATCHER_SLACK_WEBHOOK_URL must be an https:// URL"),
    ],
)  # fmt: skip
def test_routes_refuse_a_bad_setting_in_one_line(env, says):
    with pytest.raises(ConfigError) as caught:
        configured_routes(env)
    text = str(caught.value)
    assert says in text and "\n" not in text
    assert SECRET_PATH not in text and SMTP_PASSWORD not in text


def test_config_refuses_a_bad_alert_setting_with_exit_2():
    env = _clean_env(**{**SMTP_ENV, "DISPATCHER_ALERT_EMAIL_FROM": "",
                        "DISPATCHER_SMTP_PASSWORD": SMTP_PASSWORD,
                        "DISPATCHER_SMTP_USERNAME": SMTP_USER})  # fmt: skip
    result = CliRunner().invoke(cli, ["config"], env=env)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: DISPATCHER_ALERT_EMAIL_FROM is required with DISPATCHER_SMTP_HOST"]
    assert SMTP_PASSWORD not in result.output
    report = json.loads(CliRunner().invoke(cli, ["config", "--json"], env=env).stdout)
    assert report["ok"] is False
    assert report["problems"] == [errors[0].removeprefix("Error: ")]


def test_a_command_refuses_a_bad_alert_setting_at_start(tmp_path):
    out = subprocess.run(
        [str(DISPATCHER), "retry", "--game-date", "2026-11-28"], cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
        env=_clean_env(DISPATCHER_ALERT_SLACK_LEVELS="critical,page",
                       DISPATCHER_SLACK_WEBHOOK_URL=f"https://hooks.slack.com/{SECRET_PATH}"),
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "Error: DISPATCHER_ALERT_SLACK_LEVELS must list levels from warning, critical"
        " (comma-separated), got 'critical,page'"
    ]
    assert SECRET_PATH not in out.stdout + out.stderr
    assert not (tmp_path / "warehouse.duckdb").exists()
