"""Every network call has a timeout: each command and route, pointed at a server that
never answers, returns within its documented bound with a clear one-line error and
leaves nothing claimed.

Two kinds of silence (tests/proxies.py, tests/alert_servers.py): a black hole, whose
kernel completes the TCP handshake but nobody ever accepts, and a silent listener,
which accepts the connection and keeps it open without a byte in return. Each call is
held to its bound x 2 + 15 s (a shared, noisy machine); without the timeout it would
hang for minutes, which is what the bound tells apart. The call runs in a thread
joined with that limit, so a missing timeout fails the test instead of hanging it.

Covered elsewhere, not repeated here: the alert channels one by one (hanging Slack,
silent SMTP, refused ports: tests/test_alert_channels.py), the announcement in every
failure mode (tests/test_announce.py), Pub/Sub refusing publishes (test_failures.py,
test_dispatch_races.py), the DuckDB file lock (tests/test_faults.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import scenarios
from alert_servers import black_hole, refused_port
from proxies import SilentListener
from reliability import record
from warehouses import copy_of

from dispatcher import ledger, marts
from dispatcher.config import Settings
from dispatcher.dispatch import EXIT_ERROR, EXIT_OK, Dispatcher
from dispatcher.warehouse import connect

T = TypeVar("T")

DISPATCHER = str(Path(sys.executable).with_name("dispatcher"))
#: Pending players, ready by count: a dispatch claims, publishes and alerts.
SPEC = scenarios.READY_BY_COUNT
GAME_DATE = SPEC.game_date
PROJECT = "bounded-test"
#: The timeouts the tests set (seconds); the product's defaults are larger.
QUERY_TIMEOUT = 2.0
PUBLISH_TIMEOUT = 2.0
IDLE_EXIT = 2.0

#: Each measured call, appended once its test's assertions held; recorded at the end.
CALLS: list[dict[str, Any]] = []


def limit(bound: float) -> float:
    """How long a call may take before it counts as unbounded."""
    return 2 * bound + 15


def _measured(call: str, bound: float, elapsed: float) -> None:
    print(f"{call}: {elapsed:.2f} s (bound {bound:g} s)")
    CALLS.append({"call": call, "bound_s": round(bound, 2), "measured_s": round(elapsed, 2)})


@pytest.fixture(scope="module", autouse=True)
def figures() -> Iterator[None]:
    yield
    if CALLS:
        record("bounded_time", calls=sorted(CALLS, key=lambda c: c["call"]))


def _within(bound: float, call: Callable[[], T]) -> tuple[T, float]:
    """Run ``call`` in a thread; (its result, seconds taken). Fails once limit(bound)
    passes (the thread is abandoned: it is the bug the test exists to find)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # raised again below, in the test's thread
            box["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, name="bounded-call", daemon=True)
    thread.start()
    thread.join(limit(bound))
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"still running after {elapsed:.0f} s (bound {bound:g} s)"
    if "error" in box:
        raise box["error"]
    return box["value"], elapsed


def _one_line(text: str | None) -> str:
    assert text and text.strip(), "no error"
    assert "\n" not in text.strip(), text
    return text


@dataclass(frozen=True)
class Silence:
    kind: str
    #: HOST:PORT
    host: str


@pytest.fixture(params=["black hole", "silent listener"])
def silence(request) -> Iterator[Silence]:
    """A server that never answers, of each kind."""
    if request.param == "black hole":
        sock = black_hole()
        yield Silence(request.param, f"127.0.0.1:{sock.getsockname()[1]}")
        sock.close()
    else:
        listener = SilentListener()
        yield Silence(request.param, listener.host)
        listener.stop()


@pytest.fixture
def settings(duckdb_scenarios: Settings, tmp_path: Path) -> Settings:
    return copy_of(duckdb_scenarios.duckdb_path, tmp_path)


def _state(settings: Settings) -> tuple[list[dict[str, Any]], int]:
    """(the date's ledger rows, its pending players)."""
    wh = connect(settings)
    try:
        return ledger.requests(wh, GAME_DATE), len(marts.pending(wh, GAME_DATE))
    finally:
        wh.close()


# -- BigQuery jobs -------------------------------------------------------------------------


def test_bigquery_jobs_end_within_the_query_timeout(silence, monkeypatch):
    """DISPATCHER_BIGQUERY_API_ENDPOINT that never answers: every statement of the run
    (the claim, the counts read after the failure, the run-log row) gives up within the
    query timeout, so `retry` ends within the dispatch bound serve's worker timeout is
    made of (serve.worst_case_seconds)."""
    from dispatcher.serve import worst_case_seconds

    # The transport is built before the claim and must not look for credentials.
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{refused_port()}")
    settings = Settings(
        warehouse="bigquery", gcp_project=PROJECT, bigquery_api_endpoint=f"http://{silence.host}",
        transport="pubsub", query_timeout_seconds=QUERY_TIMEOUT,
        publish_timeout_seconds=PUBLISH_TIMEOUT,
    )  # fmt: skip
    bound = worst_case_seconds(settings)

    result, elapsed = _within(bound, lambda: Dispatcher(settings).retry(GAME_DATE))

    assert (result.outcome, result.exit_code) == ("error", EXIT_ERROR)
    assert _one_line(result.error).startswith("WarehouseError: BigQuery query failed")
    assert "timed out" in result.error.lower() or "timeout" in result.error.lower()
    assert result.requests_published == 0 and result.batch_id is not None
    _measured(f"BigQuery jobs (`retry`, endpoint a {silence.kind})", bound, elapsed)


# -- Pub/Sub: publish, pull, announce ---------------------------------------------------------


def _cli(
    args: list[str], env: dict[str, str], bound: float
) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    out = subprocess.run(
        [DISPATCHER, *args], env=env, capture_output=True, text=True, timeout=limit(bound)
    )
    return out, time.monotonic() - started


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update({
        "DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path),
        "DISPATCHER_DBT_TARGET_PATH": str(settings.dbt_target_path),
        "DISPATCHER_LOG_FORMAT": "json",
        "DISPATCHER_GCP_PROJECT": PROJECT,
    })  # fmt: skip
    env.update(extra)
    return env


def test_trigger_publishing_into_silence_ends_within_the_publish_timeout(silence, settings):
    """`trigger` with the Pub/Sub transport: the publish gives up after
    DISPATCHER_PUBLISH_TIMEOUT, the claims are released at once, exit 1."""
    _, pending = _state(settings)
    env = _env(settings, DISPATCHER_TRANSPORT="pubsub", PUBSUB_EMULATOR_HOST=silence.host,
               DISPATCHER_PUBLISH_TIMEOUT=str(PUBLISH_TIMEOUT))  # fmt: skip

    out, elapsed = _cli(["trigger", "--game-date", GAME_DATE.isoformat(), "--json"], env,
                        PUBLISH_TIMEOUT)  # fmt: skip

    assert out.returncode == EXIT_ERROR, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["outcome"] == "publish_failed"
    assert (result["requests_published"], result["requests_failed"]) == (0, pending)
    assert _one_line(result["error"]) == (
        f"{pending} of {pending} publishes failed; their claims were released"
    )
    assert "publish failed: " in out.stderr  # why, in the log
    rows, still_pending = _state(settings)
    assert [r for r in rows if r["batch_id"] == result["batch_id"]] == []  # nothing claimed
    assert still_pending == pending
    _measured(f"Pub/Sub publish (`trigger`, emulator host a {silence.kind})", PUBLISH_TIMEOUT,
              elapsed)  # fmt: skip


def test_worker_pulling_from_silence_stops_within_its_bound(settings):
    """`worker --source pubsub --idle-exit-seconds`: the streaming pull never connects;
    the worker stops once idle, and its shutdown is bounded."""
    from dispatcher.sandbox.sources import SHUTDOWN_TIMEOUT

    listener = SilentListener()
    try:
        env = _env(settings, PUBSUB_EMULATOR_HOST=listener.host)
        bound = IDLE_EXIT + 2.0 + SHUTDOWN_TIMEOUT  # idle, the half-close, the shutdown
        out, elapsed = _cli(["worker", "--source", "pubsub", "--idle-exit-seconds",
                             str(IDLE_EXIT), "--json"], env, bound)  # fmt: skip
        connected = listener.accepted
    finally:
        listener.stop()

    assert out.returncode == EXIT_OK, out.stderr[-2000:]
    assert connected  # it did try
    assert json.loads(out.stdout)["received"] == 0
    _measured("Pub/Sub streaming pull (`worker --source pubsub`)", bound, elapsed)


def test_announce_into_silence_ends_within_its_timeout(monkeypatch):
    """Measured here for the figures; tests/test_announce.py holds every failure mode."""
    from dispatcher.announce import publish_phase4_completion

    listener = SilentListener()
    try:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", listener.host)
        result, elapsed = _within(2.0, lambda: publish_phase4_completion(
            GAME_DATE, project=PROJECT, timeout=2.0, read_counts=False,
            settings=Settings(gcp_project=PROJECT),
        ))  # fmt: skip
    finally:
        listener.stop()
    assert not result.ok
    assert "within 2 s" in _one_line(result.error)
    _measured("Pub/Sub publish (`announce`)", 2.0, elapsed)


# -- Slack and SMTP, from a dispatch ----------------------------------------------------------

CHANNEL_TIMEOUT = 1.0
CHANNEL_ATTEMPTS = 2
CHANNEL_BACKOFF = 0.1


def test_alerts_to_channels_that_never_answer_are_bounded_in_the_dispatch(
    settings, slack_server, smtp_black_hole
):
    """A dispatch that alerts while Slack hangs and SMTP never greets: it publishes,
    confirms, returns its outcome, and the alert stage costs at most each alert's
    channel bounds (attempts x timeout + pauses, per channel), one after the other."""
    from alerts.email import EmailChannel
    from alerts.slack import SlackChannel

    slack_server.mode = "hang"
    options = {"timeout": CHANNEL_TIMEOUT, "attempts": CHANNEL_ATTEMPTS,
               "backoff": CHANNEL_BACKOFF}  # fmt: skip
    channels = {
        "slack": SlackChannel(slack_server.webhook_url(), **options),
        "email": EmailChannel("127.0.0.1", smtp_black_hole, sender="d@nba.test",
                              recipients=["oncall@nba.test"], starttls=False, **options),
    }  # fmt: skip
    per_channel = CHANNEL_ATTEMPTS * CHANNEL_TIMEOUT + CHANNEL_BACKOFF * (
        2 ** (CHANNEL_ATTEMPTS - 1) - 1
    )
    _, pending = _state(settings)
    rules = 4  # at most every rule a dispatch asks for (alerts.rules.DISPATCH_RULES)
    bound = rules * len(channels) * per_channel

    result, elapsed = _within(bound, lambda: Dispatcher(settings, channels=channels).trigger(
        GAME_DATE))  # fmt: skip

    assert result.exit_code == EXIT_OK and result.outcome in ("dispatched", "partial")
    assert result.requests_published == pending
    assert result.alerts and all(
        alert["channels"] == {"slack": "failed", "email": "failed"} for alert in result.alerts
    )
    rows, _ = _state(settings)
    assert all(r["published_at"] is not None for r in rows if r["batch_id"] == result.batch_id)
    alerts_s = result.stages.rounded().get("alerts", 0.0) / 1000
    assert alerts_s <= len(result.alerts) * len(channels) * per_channel + 5
    _measured(f"Slack + SMTP from a dispatch ({len(result.alerts)} alerts)",
              len(result.alerts) * len(channels) * per_channel, alerts_s)  # fmt: skip


# -- serve: the OIDC certificates ------------------------------------------------------------


def test_push_with_certificates_out_of_reach_is_answered_within_the_fetch_timeout(settings):
    """DISPATCHER_PUSH_CERTS_URL a black hole: the push gets its answer (500, a fault,
    so Pub/Sub redelivers) within serve's certificate-fetch timeout; nothing claimed."""
    import base64

    from dispatcher.serve import CERTS_TIMEOUT, ServeSettings, create_app

    sock = black_hole()
    certs_url = f"http://127.0.0.1:{sock.getsockname()[1]}/oauth2/v1/certs"
    push = ServeSettings(audience="https://dispatcher.test",
                         service_accounts=("push@nba.iam.gserviceaccount.com",),
                         certs_url=certs_url)  # fmt: skip
    event = json.dumps({"game_date": GAME_DATE.isoformat()}).encode()
    body = {"message": {"data": base64.b64encode(event).decode(), "messageId": "m-1"},
            "subscription": "projects/nba/subscriptions/nba-phase5-trigger-sub"}  # fmt: skip
    before = _state(settings)
    client = create_app(settings, push=push).test_client()
    try:
        response, elapsed = _within(CERTS_TIMEOUT, lambda: client.post(
            "/trigger", json=body, headers={"Authorization": "Bearer a.b.c"}))  # fmt: skip
    finally:
        sock.close()

    assert response.status_code == 500
    assert _one_line(response.json["error"]) == (
        "RuntimeError: cannot fetch the token-signing certificates (TransportError)"
    )
    assert _state(settings) == before
    _measured("OIDC certificates fetch (`serve` POST /trigger)", CERTS_TIMEOUT, elapsed)
