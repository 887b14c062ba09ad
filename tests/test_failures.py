"""No claim outlives a failure it could release: a transport that cannot be built claims
nothing; a failure between the claim and the transport's answer releases the claims at
once; a backfill that fails releases the chunk it claimed ahead. (A crash, SIGKILL,
leaves only leases: tests/test_dispatch_races.py.)"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from warehouses import build_template, copy_of

from dispatcher import ledger, marts
from dispatcher.dispatch import EXIT_ERROR, EXIT_OK, Dispatcher
from dispatcher.sandbox.slate import SlateSpec
from dispatcher.transport_local import LocalOutboxTransport
from dispatcher.warehouse import connect

GAME_DATE = dt.date(2026, 11, 21)
SPEC = SlateSpec(game_date=GAME_DATE, share_predicted=0.2, seed=41)
BACKFILL_SPECS = [
    SlateSpec(game_date=GAME_DATE + dt.timedelta(days=i), seed=50 + i) for i in range(1, 5)
]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(tmp_path_factory.mktemp("failures"), [SPEC, *BACKFILL_SPECS])


@pytest.fixture
def settings(template, tmp_path):
    return copy_of(template, tmp_path)


def _ledger(settings, first=GAME_DATE, last=GAME_DATE) -> list[dict]:
    wh = connect(settings)
    try:
        return wh.query(
            "select * from nba_orchestration.request_ledger"
            " where game_date between @first and @last",
            {"first": first, "last": last},
        )
    finally:
        wh.close()


def _pending(settings, game_date=GAME_DATE) -> int:
    wh = connect(settings)
    try:
        return len(marts.pending(wh, game_date))
    finally:
        wh.close()


class Unbuildable(Exception):
    pass


def _cannot_build(_warehouse):
    raise Unbuildable("no credentials")


class RaisingOutbox(LocalOutboxTransport):
    """The local outbox whose publish raises instead of answering, on the nth call."""

    calls = 0

    def __init__(self, warehouse, fail_on: int = 1) -> None:
        super().__init__(warehouse.outbox())
        self.fail_on = fail_on

    def publish(self, topic, messages, *, timeout=10.0):
        RaisingOutbox.calls += 1
        if RaisingOutbox.calls >= self.fail_on:
            raise ConnectionError("transport went away mid-publish")
        return super().publish(topic, messages, timeout=timeout)


def test_a_transport_that_cannot_be_built_claims_nothing(settings):
    pending = _pending(settings)
    result = Dispatcher(settings, transport_factory=_cannot_build).retry(GAME_DATE)

    assert (result.outcome, result.exit_code) == ("error", EXIT_ERROR)
    assert "no credentials" in result.error
    assert result.requests_published == 0
    # The counts still say where the date stands.
    assert result.players_expected == SPEC.counts().expected
    assert [r for r in _ledger(settings) if r["published_at"] is None] == []
    assert _pending(settings) == pending
    again = Dispatcher(settings).retry(GAME_DATE)
    assert (again.exit_code, again.requests_published) == (EXIT_OK, pending)


def test_a_publish_that_raises_releases_its_claims_at_once(settings):
    pending = _pending(settings)
    RaisingOutbox.calls = 0
    result = Dispatcher(settings, transport_factory=RaisingOutbox).retry(GAME_DATE)

    assert (result.outcome, result.exit_code) == ("error", EXIT_ERROR)
    assert "mid-publish" in result.error
    assert [r for r in _ledger(settings) if r["published_at"] is None] == []
    assert _pending(settings) == pending  # pending now, not after the lease
    again = Dispatcher(settings).retry(GAME_DATE)
    assert (again.exit_code, again.requests_published) == (EXIT_OK, pending)


def test_a_failed_backfill_releases_what_it_claimed_ahead_and_resumes(settings):
    first = BACKFILL_SPECS[0].game_date
    last = BACKFILL_SPECS[-1].game_date
    per_date = {spec.game_date: spec.counts().pending for spec in BACKFILL_SPECS}

    def second_publish_fails(warehouse):
        return RaisingOutbox(warehouse, fail_on=2)

    RaisingOutbox.calls = 0
    failed = Dispatcher(settings, transport_factory=second_publish_fails).backfill(
        first, last, chunk_days=1
    )

    assert (failed.outcome, failed.exit_code) == ("error", EXIT_ERROR)
    rows = _ledger(settings, first, last)
    assert [r for r in rows if r["published_at"] is None] == []  # nothing left leased
    assert {r["game_date"] for r in rows} == {first}  # the first chunk went out and stays
    assert len(rows) == per_date[first]

    resumed = Dispatcher(settings).backfill(first, last, chunk_days=1)
    assert resumed.exit_code == EXIT_OK
    assert resumed.requests_published == sum(per_date.values()) - per_date[first]
    published = [r for r in _ledger(settings, first, last) if r["published_at"] is not None]
    assert len(published) == len({(r["game_date"], r["player_lookup"]) for r in published})


def test_cli_with_unusable_credentials_leaves_nothing_in_flight(settings, tmp_path):
    """The operator's case: Pub/Sub configured, credentials that do not exist."""
    pending = _pending(settings)
    env = {
        key: value for key, value in os.environ.items() if key != "PUBSUB_EMULATOR_HOST"
    }
    env.update({
        "DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path),
        "DISPATCHER_TRANSPORT": "pubsub",
        "DISPATCHER_GCP_PROJECT": "nba-props-test",
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "nonexistent.json"),
        "HOME": str(tmp_path),  # no gcloud default credentials either
    })  # fmt: skip
    executable = shutil.which("dispatcher", path=str(Path(sys.executable).parent))
    out = subprocess.run(
        [executable, "retry", "--game-date", GAME_DATE.isoformat(), "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert out.returncode == EXIT_ERROR, out.stderr[-2000:]
    payload = json.loads(out.stdout)
    assert payload["outcome"] == "error" and payload["requests_published"] == 0
    assert payload["players_expected"] == SPEC.counts().expected
    assert [r for r in _ledger(settings) if r["published_at"] is None] == []
    assert _pending(settings) == pending
    wh = connect(settings)
    try:
        assert ledger.requests(wh, GAME_DATE) == []  # nothing claimed at all
    finally:
        wh.close()
