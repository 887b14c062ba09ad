"""The claim lease: a claim nobody confirmed holds its players for `claim_lease_seconds`
(60 by default), not for the 10-minute lease of a published request; meanwhile a
dispatch that finds nothing else pending answers `in_progress` (exit 5; `serve` 503
with Retry-After, so Pub/Sub redelivers) instead of `nothing_pending`.

The fault of docs/RELIABILITY.md: a dispatcher SIGKILLed right after its claim (its
publish hangs on a Pub/Sub host that never answers), then the push redelivered to a
real `dispatcher serve`: every player is published once, within the claim lease plus
one redelivery.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from alert_servers import black_hole
from reliability import record
from serving import call, serve_env, start_serve
from test_serve import envelope
from warehouses import build_template, copy_of

from dispatcher import ledger
from dispatcher.config import Settings
from dispatcher.dispatch import EXIT_IN_PROGRESS, EXIT_OK, Dispatcher
from dispatcher.sandbox.slate import SlateSpec
from dispatcher.warehouse import LEDGER, connect

GAME_DATE = dt.date(2026, 11, 14)
DISPATCHER = Path(sys.executable).with_name("dispatcher")
#: The default of dbt_project.yml, which the module's first template is built with.
DEFAULT_CLAIM_LEASE = 60
#: The fault test's build: short, so the test waits seconds, not a minute.
SHORT_CLAIM_LEASE = 6
SUBPROCESS_TIMEOUT = 60


def _spec() -> SlateSpec:
    return SlateSpec(game_date=GAME_DATE, teams=6, players_per_team=12, seed=11)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return build_template(tmp_path_factory.mktemp("claim-lease"), [_spec()], tests=False)


@pytest.fixture
def settings(template: Path, tmp_path: Path) -> Settings:
    return copy_of(template, tmp_path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def _claim_and_die(settings: Settings, claimed_at: dt.datetime) -> list[dict]:
    """What a dispatcher killed after its claim leaves: claims, never confirmed."""
    wh = connect(settings)
    try:
        return ledger.claim(
            wh, GAME_DATE, batch_id="killed", trigger_source="pubsub", now=claimed_at
        )
    finally:
        wh.close()


def _rows(settings: Settings, sql: str) -> list[dict]:
    wh = connect(settings)
    try:
        return wh.query(sql, {"game_date": GAME_DATE})
    finally:
        wh.close()


def _published_per_player(settings: Settings) -> Counter:
    rows = _rows(
        settings,
        "select attributes from nba_orchestration.request_outbox where game_date = @game_date",
    )
    return Counter(json.loads(row["attributes"])["player_lookup"] for row in rows)


def test_a_live_unconfirmed_claim_answers_in_progress_and_publishes_nothing(settings):
    pending = _spec().counts().pending
    claimed = _claim_and_die(settings, _now() - dt.timedelta(seconds=DEFAULT_CLAIM_LEASE - 20))
    assert len(claimed) == pending

    result = Dispatcher(settings).trigger(GAME_DATE, trigger_source="pubsub")

    assert (result.outcome, result.exit_code) == ("in_progress", EXIT_IN_PROGRESS), result.error
    assert result.requests_published == 0 and result.batch_id is None
    assert result.players_claimed == pending
    assert result.players_in_flight == pending
    # The claims end 20 s from now (give or take the clock's second).
    assert result.retry_after_seconds is not None and 15 <= result.retry_after_seconds <= 21
    body = result.as_json()
    assert body["players_claimed"] == pending
    assert body["retry_after_seconds"] == result.retry_after_seconds
    assert _published_per_player(settings) == Counter()


def test_an_unconfirmed_claim_ends_after_the_claim_lease_not_the_request_lease(settings):
    pending = _spec().counts().pending
    _claim_and_die(settings, _now() - dt.timedelta(seconds=DEFAULT_CLAIM_LEASE + 1))

    result = Dispatcher(settings).retry(GAME_DATE)

    assert (result.outcome, result.exit_code) == ("dispatched", EXIT_OK), result.error
    assert result.requests_published == pending
    assert set(_published_per_player(settings).values()) == {1}
    # A published request holds the 10-minute lease: now nothing is pending, nothing claimed.
    again = Dispatcher(settings).retry(GAME_DATE)
    assert (again.outcome, again.exit_code, again.requests_published) == (
        "nothing_pending", EXIT_OK, 0,
    )  # fmt: skip
    assert again.players_claimed == 0 and again.retry_after_seconds is None


def test_the_cli_says_in_progress_with_exit_5(settings):
    _claim_and_die(settings, _now())
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update({
        "DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path),
        "DISPATCHER_DBT_TARGET_PATH": str(settings.dbt_target_path),
    })  # fmt: skip
    done = subprocess.run(
        [str(DISPATCHER), "retry", "--game-date", GAME_DATE.isoformat()],
        env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == EXIT_IN_PROGRESS, done.stderr
    assert f"retry {GAME_DATE}: in_progress" in done.stdout
    pending = _spec().counts().pending
    assert f"{pending} claimed by another dispatch, not confirmed yet; try again in" in done.stdout


# --- the fault: SIGKILL after the claim, then the push redelivered ----------------------


def _kill_after_claim(settings: Settings, workdir: Path) -> float:
    """Run `dispatcher trigger` publishing to a Pub/Sub host that takes the connection
    and never answers; SIGKILL it as soon as it connects (its claim is committed by
    then: the transport connects on its first publish). The kill's monotonic time."""
    hole = black_hole()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update({
        "DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path),
        "DISPATCHER_DBT_TARGET_PATH": str(settings.dbt_target_path),
        "DISPATCHER_TRANSPORT": "pubsub", "DISPATCHER_GCP_PROJECT": "claim-lease",
        "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{hole.getsockname()[1]}",
        "DISPATCHER_LOG_FORMAT": "json",
    })  # fmt: skip
    log = (workdir / "killed.log").open("w")
    process = subprocess.Popen(
        [str(DISPATCHER), "trigger", "--game-date", GAME_DATE.isoformat(),
         "--trigger-source", "pubsub"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        readable, _, _ = select.select([hole], [], [], SUBPROCESS_TIMEOUT)
        assert readable, "the dispatcher never tried to publish"
        os.killpg(process.pid, signal.SIGKILL)
        killed = time.monotonic()
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()
        hole.close()
    assert process.returncode == -signal.SIGKILL
    return killed


def test_sigkill_after_the_claim_heals_within_the_claim_lease_and_one_redelivery(
    tmp_path_factory, tmp_path
):
    lease = SHORT_CLAIM_LEASE
    template = build_template(
        tmp_path_factory.mktemp("claim-lease-short"), [_spec()],
        vars={"claim_lease_seconds": lease}, tests=False,
    )  # fmt: skip
    settings = copy_of(template, tmp_path)
    pending = _spec().counts().pending

    killed = _kill_after_claim(settings, tmp_path)
    left = _rows(
        settings,
        f"select batch_id, published_at from {LEDGER}"
        " where game_date = @game_date and trigger_source = 'pubsub'",
    )
    assert len(left) == pending and all(row["published_at"] is None for row in left), left

    server = start_serve(tmp_path, serve_env(settings))
    push = envelope({"game_date": GAME_DATE.isoformat(), "event_type": "phase4_complete"})
    headers = {"Content-Type": "application/json"}
    try:
        # Pub/Sub delivers the event again: the claims are the killed run's, still live.
        status, body, answer_headers = call(f"{server.url}/trigger", "POST", push, headers)
        assert status == 503, body
        assert body["outcome"] == "in_progress" and body["players_claimed"] == pending
        retry_after = int(answer_headers["Retry-After"])
        assert 1 <= retry_after <= lease
        # The subscription's backoff: the redelivery after Retry-After finds them pending.
        time.sleep(retry_after + 0.5)
        status, body, _ = call(f"{server.url}/trigger", "POST", push, headers)
        healed = time.monotonic() - killed
        assert status == 200, body
        assert (body["outcome"], body["requests_published"]) == ("dispatched", pending)
        # Any later redelivery: nothing twice.
        status, body, _ = call(f"{server.url}/trigger", "POST", push, headers)
        assert (status, body["outcome"], body["requests_published"]) == (
            200, "nothing_pending", 0,
        )  # fmt: skip
    finally:
        server.stop()

    per_player = _published_per_player(settings)
    assert len(per_player) == pending and set(per_player.values()) == {1}, per_player
    print(f"killed after the claim; every player published {healed:.1f} s later"
          f" (claim lease {lease} s, one 503 then one redelivery)")  # fmt: skip
    assert healed < lease + 30  # the lease, one redelivery and the dispatch, not 10 minutes
    record(
        "faults", fault="sigkill_after_claim", claim_lease_seconds=lease,
        players=pending, healed_after_seconds=round(healed, 1), published_twice=0,
        redeliveries=2,
    )  # fmt: skip


def test_a_publish_timeout_that_outlasts_the_claim_lease_is_refused_at_start():
    assert Settings().problems() == []
    assert Settings(publish_timeout_seconds=30).problems() == []
    (problem,) = Settings(publish_timeout_seconds=50).problems()
    assert problem == (
        "DISPATCHER_PUBLISH_TIMEOUT (50 s) plus 20 s for the confirm must stay within the"
        " dbt var claim_lease_seconds (60 s): lower the timeout or raise the var"
    )
