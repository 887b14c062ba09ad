"""Sentinel secrets never leave, swept across every output at once.

The secrets (README, configuration): the Slack webhook URL (its path is the secret), the
SMTP password (the username is not one: `dispatcher config` shows it), the contents of
the key file DISPATCHER_BIGQUERY_KEYFILE names (its path is shown, never its text), and
the OIDC bearer tokens sent to `serve`. Each has sentinel values; every output is
searched for every one of them (and their base64 / URL-encoded forms):

- the installed CLI, one process per command, configured with all of them: a critical
  trigger whose alert reaches the Slack stand-in and an SMTP server with AUTH; a retry
  whose channels both fail (a webhook server answering 404 with the request path in its
  body, and a wrong SMTP password), with -v and text logs; a status with Slack refused;
  a -v traceback; the report; `config` and `config --json`: stdout, stderr (JSON lines,
  text lines, tracebacks), the report's HTML, the messages Slack and SMTP received;
- every row of every table the runs wrote (run log, alert_log with its errors, ledger,
  outbox, ...);
- settings refused at start (exit 2), each with every secret set;
- `dispatcher serve` under gunicorn with OIDC on and every secret set: the answers
  (bodies and headers) to good, wrong and malformed tokens and bodies, and its log; a
  token sent while the certificates are out of reach (answered 500).

What tests/test_alerts_e2e.py (webhook path and SMTP password in the CLI's stdout and
stderr), tests/test_config.py (masking, a broken key file's text) and
tests/test_serve_auth.py (refused and accepted tokens in serve's logs and answers)
assert is not repeated case by case: this is the sweep across all of them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from alert_servers import SMTP_PASSWORD, SMTP_USER
from alert_slate import GAME_DATE, SPEC, make_ready
from click.testing import CliRunner
from reliability import record
from serving import start_serve
from test_serve import envelope
from test_serve_auth import (  # noqa: F401 (fixtures: certs_server, keys)
    AUDIENCE,
    PUSH_ACCOUNT,
    SCHEDULER_ACCOUNT,
    _key_and_cert,
    certs_server,
    keys,
    token,
)
from warehouses import FILE_NAME, copy_of

from dispatcher import dbt
from dispatcher.cli import cli
from dispatcher.config import MASK, Settings
from dispatcher.sandbox.load import write_duckdb
from dispatcher.sandbox.slate import generate_slate
from dispatcher.serve import ServeSettings, create_app
from dispatcher.warehouse import connect

# aiosmtpd itself sets the attribute it deprecates when a login succeeds.
pytestmark = pytest.mark.filterwarnings("ignore:Session.login_data is deprecated")

DISPATCHER = str(Path(sys.executable).with_name("dispatcher"))
DATE = ["--game-date", GAME_DATE.isoformat()]
#: Shaped as Slack's: /services/T<team>/B<bot>/<24-character token>.
WEBHOOK_PATH = "T0SWEEP00/B0SWEEP00/sentinelsweepwebhook5e1b"
WRONG_PASSWORD = "sentinel-sweep-wrong-password-91c3"
KEY_ID = "sentinel-sweep-key-id-3c5e"
KEY_EMAIL = "sweep-dispatcher@nba-test.iam.gserviceaccount.com"
#: The tests that feed the sweep; its figures are recorded once all of them passed.
SWEEPS = {"cli", "settings", "serve"}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Sweep:
    """The sentinels by secret, and how many outputs were searched for them."""

    sentinels: dict[str, tuple[str, ...]]
    checked: int = 0
    done: set[str] = field(default_factory=set)

    def check(self, where: str, text: str | bytes | None) -> None:
        """No sentinel in ``text``; the message shows where and around what."""
        if text is None:
            return
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.checked += 1
        for name, values in self.sentinels.items():
            for value in values:
                at = text.find(value)
                assert at < 0, (
                    f"{name} leaked in {where}: ...{text[max(0, at - 160) : at + 80]!r}..."
                )


@pytest.fixture(scope="module")
def key_pem() -> str:
    return _key_and_cert("sweep-service-account")[0]


@pytest.fixture(scope="module")
def keyfile(tmp_path_factory, key_pem) -> Path:
    """A service-account key file that loads (a real RSA key of our own); its token URI
    is a closed local port, so nothing could fetch a token with it."""
    path = tmp_path_factory.mktemp("keyfile") / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "nba-test", "private_key_id": KEY_ID,
        "private_key": key_pem, "client_email": KEY_EMAIL, "client_id": "1234567890",
        "token_uri": "http://127.0.0.1:9/token",
    }))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def tokens(keys) -> dict[str, str]:  # noqa: F811 (the fixture imported above)
    """The bearer tokens serve is sent: a good one of each account, and a stranger's."""
    return {
        "push": token(keys),
        "scheduler": token(keys, email=SCHEDULER_ACCOUNT),
        "stranger": token(keys, key="stranger"),
    }


@pytest.fixture(scope="module")
def sweep(key_pem, tokens) -> Iterator[Sweep]:
    token_parts = [part for t in tokens.values() for part in t.split(".")[1:]]
    webhook_token = WEBHOOK_PATH.rsplit("/", 1)[1]
    key_lines = [line for line in key_pem.splitlines() if "-----" not in line]
    found = Sweep({
        "DISPATCHER_SLACK_WEBHOOK_URL": (
            WEBHOOK_PATH, WEBHOOK_PATH.rsplit("/", 1)[0], webhook_token[:12],
            webhook_token[-12:], urllib.parse.quote(WEBHOOK_PATH, safe=""),
        ),
        "DISPATCHER_SMTP_PASSWORD": (
            SMTP_PASSWORD, WRONG_PASSWORD, _b64(SMTP_PASSWORD), _b64(WRONG_PASSWORD),
            _b64(f"\0{SMTP_USER}\0{SMTP_PASSWORD}"), _b64(f"\0{SMTP_USER}\0{WRONG_PASSWORD}"),
        ),
        "DISPATCHER_BIGQUERY_KEYFILE contents": (
            KEY_ID, "PRIVATE KEY", key_lines[0], key_lines[len(key_lines) // 2],
            key_lines[-2],
        ),
        "OIDC bearer tokens": (*tokens.values(), *token_parts),
    })  # fmt: skip
    yield found
    if found.done == SWEEPS:
        record("secrets", sentinels=sorted(found.sentinels), outputs_checked=found.checked,
               sentinel_values=sum(len(v) for v in found.sentinels.values()))  # fmt: skip


def test_the_sweep_finds_every_form_of_every_sentinel(sweep):
    """Each sentinel value, wherever it sits in a text, fails the check."""
    probe = Sweep(sweep.sentinels)
    for name, values in sweep.sentinels.items():
        assert len(values) >= 3, name
        for value in values:
            with pytest.raises(AssertionError, match=name):
                probe.check("a probe", f"line one\nsomething {value} more")
    probe.check("a clean text", "nothing to see: ******** /services/***")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The alert slate (Phase 4 wrote every feature row, nobody production ready) and
    `dbt run`: the models only, a few seconds less than the build (its data tests run in
    other suites)."""
    workdir = tmp_path_factory.mktemp("secrets")
    settings = Settings(duckdb_path=workdir / FILE_NAME, dbt_target_path=workdir / "target")
    write_duckdb(settings.duckdb_path, [generate_slate(SPEC)])
    dbt.run_dbt(settings, ["run"])
    return settings.duckdb_path


def _environ(settings, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("DISPATCHER_") and k != "PUBSUB_EMULATOR_HOST"
    }  # fmt: skip
    env.update({
        "DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path),
        "DISPATCHER_DBT_TARGET_PATH": str(settings.dbt_target_path),
        "DISPATCHER_LOG_FORMAT": "json",
    })  # fmt: skip
    env.update(extra)
    return env


def _secrets(webhook_url: str, smtp_port: int, keyfile: Path, password: str = SMTP_PASSWORD):
    """Every secret set: Slack, email with AUTH (no TLS: the AUTH server has none), the
    key file."""
    return {
        "DISPATCHER_SLACK_WEBHOOK_URL": webhook_url,
        "DISPATCHER_SMTP_HOST": "127.0.0.1",
        "DISPATCHER_SMTP_PORT": str(smtp_port),
        "DISPATCHER_SMTP_STARTTLS": "false",
        "DISPATCHER_SMTP_USERNAME": SMTP_USER,
        "DISPATCHER_SMTP_PASSWORD": password,
        "DISPATCHER_ALERT_EMAIL_FROM": "dispatcher@nba.test",
        "DISPATCHER_ALERT_EMAIL_TO": "oncall@nba.test",
        "DISPATCHER_BIGQUERY_KEYFILE": str(keyfile),
    }


def _cli(sweep: Sweep, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([DISPATCHER, *args], env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    sweep.check(f"`dispatcher {' '.join(args)}` stdout", out.stdout)
    sweep.check(f"`dispatcher {' '.join(args)}` stderr", out.stderr)
    return out


@contextlib.contextmanager
def echoing_webhook() -> Iterator[str]:
    """A webhook server answering 404 with the request's path in a one-line body (as
    some proxies and frameworks do); yields its base URL."""

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = f"404 page not found: no route matches POST {self.path}".encode()
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_webhook_answer_quoting_the_url_is_scrubbed_before_it_is_cut():
    """A body that echoes the path is cut to 80 characters for the reason; cut first, a
    path across the cut would no longer match the scrub and its first part would stay."""
    from alerts import Alert
    from alerts.channels import ChannelError
    from alerts.slack import SlackChannel

    alert = Alert(game_date=GAME_DATE, rule="phase4_critical", level="critical",
                  message="Phase 4 insufficient", kind="new")  # fmt: skip
    with echoing_webhook() as echo:
        channel = SlackChannel(f"{echo}/services/{WEBHOOK_PATH}", timeout=5, attempts=1)
        with pytest.raises(ChannelError) as caught:
            channel(alert)
    assert str(caught.value) == (
        "slack: HTTP 404 404 page not found: no route matches POST *** (not retried)"
    )


def _tables(sweep: Sweep, settings, where: str) -> dict[str, list[dict]]:
    """Every row of every table in the warehouse file, each table searched as text."""
    wh = connect(settings)
    try:
        names = wh.query(
            "select table_schema || '.' || table_name as name from information_schema.tables"
            " where table_type = 'BASE TABLE' order by 1"
        )
        rows = {n["name"]: wh.query(f"select * from {n['name']}") for n in names}  # noqa: S608 (names from the catalog)
    finally:
        wh.close()
    for name, table in rows.items():
        sweep.check(f"{where}: table {name}", json.dumps(table, default=str))
    return rows


def _received(sweep: Sweep, slack_requests, mails, where: str) -> None:
    """What people receive: the Slack bodies and the emails, headers included."""
    for request in slack_requests:
        sweep.check(f"{where}: Slack body", json.dumps(request.body))
    for mail in mails:
        sweep.check(f"{where}: email", mail.message.as_string())


def test_cli_outputs_the_warehouse_and_the_report(template, tmp_path, sweep, keyfile,
                                                  slack_server, smtp_auth_server,
                                                  refused_port):  # fmt: skip
    settings = copy_of(template, tmp_path)
    env = _environ(settings, **_secrets(slack_server.webhook_url(WEBHOOK_PATH),
                                        smtp_auth_server.port, keyfile))  # fmt: skip

    # Phase 4 insufficient: the critical alert goes to Slack and by email (with AUTH).
    refused = _cli(sweep, env, "trigger", "--json", *DATE)
    assert refused.returncode == 3, refused.stderr[-2000:]
    assert [r.path for r in slack_server.requests] == [f"/services/{WEBHOOK_PATH}"]
    assert [m.login for m in smtp_auth_server.messages] == [SMTP_USER]
    _received(sweep, slack_server.requests, smtp_auth_server.messages, "trigger")

    # Both channels fail: the webhook's server echoes the path, the password is wrong;
    # -v and text logs show every line.
    make_ready(settings, 0.85)
    with echoing_webhook() as echo:
        failing = {**env, **_secrets(f"{echo}/services/{WEBHOOK_PATH}", smtp_auth_server.port,
                                     keyfile, WRONG_PASSWORD)}  # fmt: skip
        retried = _cli(sweep, failing, "-v", "--log-format", "text", "retry", "--json", *DATE)
    assert retried.returncode == 0, retried.stderr[-2000:]
    alerts = json.loads(retried.stdout)["alerts"]
    assert alerts and all(a["channels"]["slack"] == a["channels"]["email"] == "failed"
                          for a in alerts), alerts  # fmt: skip

    # Slack refused, email back: the status check's alert.
    refused_slack = {**env, "DISPATCHER_SLACK_WEBHOOK_URL":
                     f"http://127.0.0.1:{refused_port}/services/{WEBHOOK_PATH}"}  # fmt: skip
    status = _cli(sweep, refused_slack, "status", "--json", *DATE)
    assert status.returncode in (0, 4), status.stderr[-2000:]
    assert any(a["channels"].get("slack") == "failed" for a in json.loads(status.stdout)["alerts"])
    _received(sweep, slack_server.requests, smtp_auth_server.messages, "retry, status")

    # An error with -v: the traceback.
    directory = tmp_path / "not-a-warehouse"
    directory.mkdir()
    broken = _cli(sweep, {**env, "DISPATCHER_DUCKDB_PATH": str(directory)}, "-v", "trigger",
                  "--json", *DATE)  # fmt: skip
    assert broken.returncode == 1 and "Traceback (most recent call last)" in broken.stderr

    # The report, and what `config` shows (secrets masked, the key file as its path).
    page = tmp_path / "report.html"
    report = _cli(sweep, env, "report", "--days", "3", "--out", str(page), "--json", *DATE)
    assert report.returncode == 0, report.stderr[-2000:]
    sweep.check("the report's HTML", page.read_text())
    assert "alert" in page.read_text().lower()
    shown = _cli(sweep, env, "config")
    as_json = _cli(sweep, env, "config", "--json")
    assert shown.returncode == as_json.returncode == 0, shown.stderr + as_json.stderr
    rows = {row["name"]: row for row in json.loads(as_json.stdout)["settings"]}
    assert rows["DISPATCHER_SMTP_PASSWORD"]["value"] == MASK
    assert rows["DISPATCHER_SLACK_WEBHOOK_URL"]["value"] == MASK
    assert rows["DISPATCHER_BIGQUERY_KEYFILE"]["value"] == str(keyfile)
    assert rows["DISPATCHER_SMTP_USERNAME"]["value"] == SMTP_USER  # not a secret

    # Everything the runs wrote, the failures' reasons included.
    tables = _tables(sweep, settings, "CLI runs")
    errors = [r["error_message"] for r in tables["nba_orchestration.alert_log"]
              if r["status"] == "failed"]  # fmt: skip
    assert any(e.startswith("slack: HTTP 404") for e in errors), errors
    assert any(e.startswith("email: ") for e in errors), errors
    assert any("connection refused" in e for e in errors), errors
    assert len(tables["nba_orchestration.dispatch_runs"]) >= 3
    sweep.done.add("cli")


BAD_SETTINGS = {
    "webhook without a scheme": {
        "DISPATCHER_SLACK_WEBHOOK_URL": f"hooks.slack.com/services/{WEBHOOK_PATH}"},
    "webhook with a space": {
        "DISPATCHER_SLACK_WEBHOOK_URL": f"https://hooks.slack.com/services/{WEBHOOK_PATH} x"},
    "SMTP port not a number": {"DISPATCHER_SMTP_PORT": "25x"},
    "password without username": {"DISPATCHER_SMTP_USERNAME": None},
    "SMTP host without sender": {"DISPATCHER_ALERT_EMAIL_FROM": None},
    "unknown Slack level": {"DISPATCHER_ALERT_SLACK_LEVELS": "page-me"},
    "Pub/Sub without project": {"DISPATCHER_TRANSPORT": "pubsub"},
    "unknown warehouse": {"DISPATCHER_WAREHOUSE": "oracle"},
}  # fmt: skip


def test_settings_refused_at_start_never_quote_a_secret(sweep, keyfile, tmp_path):
    """In-process (CliRunner): every command refuses at start, with one line."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("DISPATCHER_")}
    webhook = f"https://hooks.slack.com/services/{WEBHOOK_PATH}"
    base = {**unset, "PUBSUB_EMULATOR_HOST": None,
            "DISPATCHER_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
            **_secrets(webhook, 2525, keyfile)}  # fmt: skip
    runner = CliRunner()
    for case, change in BAD_SETTINGS.items():
        env = {**base, **change}
        for args in (["trigger", "--json", *DATE], ["-v", "retry", *DATE], ["config"],
                     ["config", "--json"]):  # fmt: skip
            result = runner.invoke(cli, args, env=env)
            where = f"{case}: `dispatcher {' '.join(args)}`"
            assert result.exit_code == 2, (where, result.output)
            sweep.check(f"{where} output", result.output)
            sweep.check(f"{where} stderr", result.stderr)
            if args[0] != "config":
                assert result.stderr.strip().count("\n") == 0 and "Error: " in result.stderr
    sweep.done.add("settings")


def _request(url: str, method: str = "GET", body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, str, str]:  # fmt: skip
    """(status, body, headers as text); never raises for an HTTP status."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(), str(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), str(exc.headers)


def test_serve_answers_and_logs(template, tmp_path, sweep, keyfile, tokens,
                                certs_server,  # noqa: F811 (the fixture imported above)
                                slack_server, smtp_auth_server, capsys,
                                monkeypatch):  # fmt: skip
    settings = copy_of(template, tmp_path)
    env = _environ(
        settings, DISPATCHER_TRANSPORT="local", DISPATCHER_PUSH_AUDIENCE=AUDIENCE,
        DISPATCHER_PUSH_SERVICE_ACCOUNTS=f"{PUSH_ACCOUNT},{SCHEDULER_ACCOUNT}",
        DISPATCHER_PUSH_CERTS_URL=certs_server.url,
        **_secrets(slack_server.webhook_url(WEBHOOK_PATH), smtp_auth_server.port, keyfile),
    )  # fmt: skip
    push = json.dumps(envelope({"game_date": GAME_DATE.isoformat()})).encode()
    day = json.dumps({"game_date": GAME_DATE.isoformat()}).encode()
    bearer = {name: {"Authorization": f"Bearer {value}", "Content-Type": "application/json"}
              for name, value in tokens.items()}  # fmt: skip
    calls = [
        ("/trigger", push, bearer["push"], 503),  # Phase 4 insufficient: alerts go out
        ("/trigger", push, bearer["stranger"], 401),
        ("/trigger", push, {"Authorization": f"Basic {tokens['push']}"}, 401),
        ("/trigger", b'{"message": {"data": "%%%"}}', bearer["push"], 400),
        ("/retry", day, bearer["scheduler"], 200),  # nobody ready: nothing pending
        ("/status", day, bearer["scheduler"], 200),
        ("/start", b"{not json", bearer["scheduler"], 400),
    ]
    server = start_serve(tmp_path, env)
    try:
        for path, body, headers, expected in calls:
            status, text, answer_headers = _request(f"{server.url}{path}", "POST", body, headers)
            assert status == expected, (path, status, text)
            sweep.check(f"serve: POST {path} answer", text)
            sweep.check(f"serve: POST {path} answer headers", answer_headers)
        status, text, answer_headers = _request(f"{server.url}/health")
        assert status == 200
        sweep.check("serve: GET /health", text + answer_headers)
    finally:
        server.stop()
    sweep.check("serve: its log", server.log_path.read_text())
    assert slack_server.requests and smtp_auth_server.messages  # the alerts went out
    _received(sweep, slack_server.requests, smtp_auth_server.messages, "serve")
    _tables(sweep, settings, "serve")

    # The certificates out of reach: a fault (500), whose answer and log quote no token.
    monkeypatch.setenv("DISPATCHER_SLACK_WEBHOOK_URL", slack_server.webhook_url(WEBHOOK_PATH))
    dead = ServeSettings(audience=AUDIENCE, service_accounts=(PUSH_ACCOUNT,),
                         certs_url="http://127.0.0.1:9/certs")  # fmt: skip
    client = create_app(settings, push=dead).test_client()
    capsys.readouterr()
    response = client.post("/trigger", data=push, headers=bearer["push"])
    assert response.status_code == 500 and "certificates" in response.json["error"]
    sweep.check("serve, certificates out of reach: answer", response.get_data(as_text=True))
    sweep.check("serve, certificates out of reach: log", capsys.readouterr().err)
    sweep.done.add("serve")
