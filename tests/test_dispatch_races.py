"""Races and crashes around claim -> publish -> confirm (the guarantees of docs/CONTRACT.md).

Never two requests for the same (game_date, player) inside the lease, whatever races:
redelivered events, the event and the scheduler together, several processes at once,
a crash between claim and publish, Pub/Sub dying mid-publish, and the same on the
BigQuery emulator. Every count comes from SlateSpec.counts().

The DuckDB tests share one dbt build (module fixture) and copy its file per test.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servers import Server, start_pubsub_emulator
from warehouses import build_template, copy_of

from dispatcher import ledger
from dispatcher.config import Settings
from dispatcher.dispatch import EXIT_ERROR, EXIT_IN_PROGRESS, EXIT_OK, Dispatcher, RunResult
from dispatcher.sandbox.slate import SlateSpec, generate_slate
from dispatcher.transport import REQUEST_TOPIC
from dispatcher.warehouse import connect

#: In the past, so the CLI accepts it whenever the suite runs (it refuses > 14 days ahead).
GAME_DATE = dt.date(2026, 11, 12)
#: Not used by tests/scenarios.py: the BigQuery emulator is shared by the whole session.
BQ_GAME_DATE = dt.date(2026, 11, 10)
BQ_PROJECT = "nba-test"

SUBPROCESS_TIMEOUT = 120  # seconds, per dispatcher CLI process
THREAD_TIMEOUT = 120  # seconds, per dispatcher thread
CALL_TIMEOUT = 10.0  # seconds, per Pub/Sub admin / pull call


def _spec(game_date: dt.date, **overrides: Any) -> SlateSpec:
    """Every state represented: predicted, in flight, expired claims among the pending."""
    knobs: dict[str, Any] = {
        "game_date": game_date,
        "share_predicted": 0.3,
        "share_partially_predicted": 0.05,
        "share_in_flight": 0.1,
        "share_lease_expired": 0.1,
        "seed": 7,
    }
    knobs.update(overrides)
    return SlateSpec(**knobs)


@dataclass(frozen=True)
class Expected:
    """What the slate says the dispatcher must request: exactly these ids, once each."""

    pending: int
    #: Pending players whose earlier claim expired (their next request is attempt 2).
    lease_expired: int
    #: player_lookup -> the request_id its next request must carry.
    request_ids: dict[str, str]
    #: The ledger rows the slate itself wrote (in flight, expired claims).
    slate_request_ids: frozenset[str]

    @property
    def players(self) -> set[str]:
        return set(self.request_ids)


def _request_id(game_date: dt.date, player: str, attempt: int) -> str:
    """The request id the contract promises consumers (docs/CONTRACT.md)."""
    return f"{game_date.isoformat()}/{player}/{attempt}"


def _expected(spec: SlateSpec) -> Expected:
    slate = generate_slate(spec)
    counts = spec.counts()
    pending = {p for p, state in slate.player_states.items() if state == "pending"}
    # Expired (unpublished, 2 h old) claims are those players' first attempts.
    attempts = Counter(row["player_lookup"] for row in slate.ledger)
    assert len(pending) == counts.pending
    assert sum(1 for row in slate.ledger if row["published_at"] is None) == counts.lease_expired
    assert counts.pending > 0 and counts.lease_expired > 0 and counts.in_flight > 0
    return Expected(
        pending=counts.pending,
        lease_expired=counts.lease_expired,
        request_ids={
            player: _request_id(spec.game_date, player, attempts[player] + 1) for player in pending
        },
        slate_request_ids=frozenset(row["request_id"] for row in slate.ledger),
    )


# --- DuckDB: one dbt build per module, one copy per test --------------------------------


@dataclass(frozen=True)
class Template:
    path: Path
    expected: Expected


@pytest.fixture(scope="module")
def duckdb_template(tmp_path_factory) -> Template:
    # "now" ahead of the wall clock: the slate's in-flight requests (published 2 min
    # before "now") stay inside their 10-minute lease for 18 minutes after this build,
    # far longer than the module runs (~2 min), whatever order its tests run in.
    # The marts are views over the current time: no as_of is pinned.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=10)
    spec = _spec(GAME_DATE, now=now)
    path = build_template(tmp_path_factory.mktemp("races"), [spec])
    return Template(path=path, expected=_expected(spec))


@pytest.fixture
def settings(duckdb_template: Template, tmp_path: Path) -> Settings:
    return copy_of(duckdb_template.path, tmp_path)


@pytest.fixture
def expected(duckdb_template: Template) -> Expected:
    return duckdb_template.expected


def _ledger(settings: Settings, game_date: dt.date = GAME_DATE) -> list[dict[str, Any]]:
    wh = connect(settings)
    try:
        return ledger.requests(wh, game_date)
    finally:
        wh.close()


def _outbox(settings: Settings, game_date: dt.date = GAME_DATE) -> list[dict[str, Any]]:
    wh = connect(settings)
    try:
        rows = wh.query(
            "select message_id, topic, data, attributes from nba_orchestration.request_outbox"
            " where game_date = @game_date",
            {"game_date": game_date},
        )
    finally:
        wh.close()
    for row in rows:
        row["attributes"] = json.loads(row["attributes"])
        row["data"] = json.loads(row["data"])
    return rows


def _new_requests(rows: list[dict[str, Any]], expected: Expected) -> list[dict[str, Any]]:
    """Ledger rows the dispatchers wrote (not the slate's own)."""
    return [row for row in rows if row["request_id"] not in expected.slate_request_ids]


def _assert_each_pending_published_once(
    ledger_rows: list[dict[str, Any]], expected: Expected
) -> None:
    new = _new_requests(ledger_rows, expected)
    published = [row for row in new if row["published_at"] is not None]
    players = Counter(row["player_lookup"] for row in published)
    twice = sorted(p for p, n in players.items() if n > 1)
    assert not twice, f"{len(twice)} players requested more than once: {twice[:5]}"
    assert len(published) == expected.pending
    assert {row["player_lookup"]: row["request_id"] for row in published} == (expected.request_ids)
    assert all(row["message_id"] for row in published)
    # Nothing claimed and left behind by the winners or the losers.
    assert [row["request_id"] for row in new if row["published_at"] is None] == []


def _assert_outbox_matches(
    settings: Settings, ledger_rows: list[dict[str, Any]], expected: Expected
) -> None:
    outbox = _outbox(settings)
    assert len(outbox) == expected.pending
    assert {row["topic"] for row in outbox} == {REQUEST_TOPIC}
    request_ids = Counter(row["attributes"]["request_id"] for row in outbox)
    assert max(request_ids.values()) == 1
    assert set(request_ids) == set(expected.request_ids.values())
    assert all(row["data"]["request_id"] == row["attributes"]["request_id"] for row in outbox)
    # The ledger's message_id is the outbox row that carried the request.
    confirmed = {
        row["request_id"]: row["message_id"]
        for row in ledger_rows
        if row["published_at"] is not None and row["request_id"] in request_ids
    }
    assert confirmed == {row["attributes"]["request_id"]: row["message_id"] for row in outbox}


def _run_threads(*calls) -> list[RunResult]:
    """Run each call in its own thread, released together by a barrier."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call) -> None:
        barrier.wait(timeout=THREAD_TIMEOUT)
        try:
            results[index] = call()
        except BaseException as exc:  # surfaced by the assertion below
            results[index] = exc

    threads = [
        threading.Thread(target=run, args=(i, call), daemon=True) for i, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=THREAD_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a dispatcher thread hung"
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return results


# --- 1. the same event delivered five times --------------------------------------------


def test_event_delivered_five_times_requests_each_pending_player_once(settings, expected):
    dispatcher = Dispatcher(settings)
    results = [dispatcher.trigger(GAME_DATE) for _ in range(5)]

    first, *later = results
    assert (first.outcome, first.exit_code) == ("dispatched", EXIT_OK), first.error
    assert first.requests_published == expected.pending
    for again in later:
        assert (again.outcome, again.exit_code) == ("nothing_pending", EXIT_OK), again.error
        assert again.requests_published == 0
        assert again.batch_id is None
    rows = _ledger(settings)
    _assert_each_pending_published_once(rows, expected)
    _assert_outbox_matches(settings, rows, expected)


# --- 2. the event and the scheduler at the same moment ---------------------------------


def test_trigger_and_start_in_two_threads_request_each_player_once(settings, expected):
    results = _run_threads(
        lambda: Dispatcher(settings).trigger(GAME_DATE),
        lambda: Dispatcher(settings).start(GAME_DATE, wait_minutes=0),
    )

    assert [r.exit_code for r in results] == [EXIT_OK, EXIT_OK], [r.error for r in results]
    assert sum(r.requests_published for r in results) == expected.pending
    assert sorted(r.outcome for r in results) == ["dispatched", "nothing_pending"]
    rows = _ledger(settings)
    _assert_each_pending_published_once(rows, expected)
    _assert_outbox_matches(settings, rows, expected)


def test_six_dispatchers_in_threads_request_each_player_once(settings, expected):
    """More contenders, more overlap: without the dispatch_locks update in the claim
    transaction, DuckDB's MVCC lets two INSERT ... SELECT claims both commit."""
    results = _run_threads(
        *[lambda: Dispatcher(settings).trigger(GAME_DATE)] * 2,
        *[lambda: Dispatcher(settings).start(GAME_DATE, wait_minutes=0)] * 2,
        *[lambda: Dispatcher(settings).retry(GAME_DATE)] * 2,
    )

    assert [r.exit_code for r in results] == [EXIT_OK] * 6, [r.error for r in results]
    assert sum(r.requests_published for r in results) == expected.pending
    assert Counter(r.outcome for r in results) == {"dispatched": 1, "nothing_pending": 5}
    rows = _ledger(settings)
    _assert_each_pending_published_once(rows, expected)
    _assert_outbox_matches(settings, rows, expected)


def _cli() -> str:
    return str(Path(sys.executable).with_name("dispatcher"))


def _cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update(
        DISPATCHER_WAREHOUSE="duckdb",
        DISPATCHER_TRANSPORT="local",
        DISPATCHER_DUCKDB_PATH=str(settings.duckdb_path),
    )
    return env


def _run_processes(settings: Settings, argvs: list[list[str]]) -> list[tuple[int, dict, str]]:
    """Start every CLI process at once; (exit code, JSON output, stderr) of each."""
    processes = [
        subprocess.Popen(
            [_cli(), *argv, "--json"],
            env=_cli_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
            try:
                payload = json.loads(stdout)
            except ValueError:
                payload = {"unparsable_stdout": stdout}
            outputs.append((process.returncode, payload, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    return outputs


def test_trigger_and_start_in_two_processes_request_each_player_once(settings, expected):
    day = GAME_DATE.isoformat()
    outputs = _run_processes(
        settings,
        [
            ["trigger", "--game-date", day],
            ["start", "--game-date", day, "--wait-minutes", "0"],
        ],
    )

    for code, payload, stderr in outputs:
        assert code == EXIT_OK, (payload, stderr[-2000:])
    payloads = [payload for _, payload, _ in outputs]
    assert sum(p["requests_published"] for p in payloads) == expected.pending
    assert sorted(p["outcome"] for p in payloads) == ["dispatched", "nothing_pending"]
    rows = _ledger(settings)
    _assert_each_pending_published_once(rows, expected)
    _assert_outbox_matches(settings, rows, expected)


# --- 3. eight retry processes on one date ----------------------------------------------


def test_eight_concurrent_retry_processes_request_each_player_once(settings, expected):
    outputs = _run_processes(
        settings, [["retry", "--game-date", GAME_DATE.isoformat()] for _ in range(8)]
    )

    for code, payload, stderr in outputs:
        assert code == EXIT_OK, (payload, stderr[-2000:])
    payloads = [payload for _, payload, _ in outputs]
    assert sum(p["requests_published"] for p in payloads) == expected.pending
    assert Counter(p["outcome"] for p in payloads) == {"dispatched": 1, "nothing_pending": 7}
    rows = _ledger(settings)
    _assert_each_pending_published_once(rows, expected)
    _assert_outbox_matches(settings, rows, expected)


# --- 4. a crash between claim and publish ----------------------------------------------


def _naive_utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def _claim_without_publishing(settings: Settings, claimed_at: dt.datetime) -> list[dict]:
    wh = connect(settings)
    try:
        return ledger.claim(
            wh, GAME_DATE, batch_id="crashed", trigger_source="retry", now=claimed_at
        )
    finally:
        wh.close()


def test_claim_older_than_the_lease_is_requested_again_as_the_next_attempt(settings, expected):
    crashed = _claim_without_publishing(settings, _naive_utc_now() - dt.timedelta(minutes=11))
    assert len(crashed) == expected.pending
    assert {row["request_id"] for row in crashed} == set(expected.request_ids.values())

    result = Dispatcher(settings).retry(GAME_DATE)

    assert (result.outcome, result.exit_code) == ("dispatched", EXIT_OK), result.error
    assert result.requests_published == expected.pending
    rows = _ledger(settings)
    published = [r for r in rows if r["batch_id"] == result.batch_id]
    assert len(published) == expected.pending
    assert all(r["published_at"] is not None for r in published)
    crashed_attempt = {row["player_lookup"]: row["attempt"] for row in crashed}
    for row in published:
        assert row["attempt"] == crashed_attempt[row["player_lookup"]] + 1
        assert row["request_id"] == _request_id(GAME_DATE, row["player_lookup"], row["attempt"])
    assert {row["player_lookup"] for row in published} == expected.players
    # First claimed by the crashed batch: attempt 2; already one expired claim before: 3.
    attempts = Counter(row["request_id"].rsplit("/", 1)[1] for row in published)
    assert attempts == {
        "2": expected.pending - expected.lease_expired,
        "3": expected.lease_expired,
    }
    # The crashed claims stay as history (never published), one per player.
    stale = [r for r in rows if r["batch_id"] == "crashed"]
    assert len(stale) == expected.pending
    assert all(r["published_at"] is None for r in stale)
    outbox = _outbox(settings)
    assert sorted(r["attributes"]["request_id"] for r in outbox) == sorted(
        r["request_id"] for r in published
    )
    again = Dispatcher(settings).retry(GAME_DATE)
    assert (again.outcome, again.requests_published) == ("nothing_pending", 0)


def test_claim_inside_the_claim_lease_is_not_requested_again(settings, expected):
    # claim_lease_seconds (60): a claim nobody confirmed holds its players that long.
    crashed = _claim_without_publishing(settings, _naive_utc_now() - dt.timedelta(seconds=30))
    assert len(crashed) == expected.pending

    result = Dispatcher(settings).retry(GAME_DATE)

    assert (result.outcome, result.exit_code) == ("in_progress", EXIT_IN_PROGRESS), result.error
    assert result.requests_published == 0
    assert result.players_claimed == expected.pending
    rows = _ledger(settings)
    assert [r for r in _new_requests(rows, expected) if r["batch_id"] != "crashed"] == []
    assert len([r for r in rows if r["batch_id"] == "crashed"]) == expected.pending
    assert _outbox(settings) == []


# --- 5. the Pub/Sub emulator dies mid-publish ------------------------------------------

PUBSUB_PROJECT = "race-test"


def _start_emulator(workdir: Path, monkeypatch) -> Server:
    """A private emulator (this test kills it), with the request topic, as the env's host."""
    from dispatcher.transport_pubsub import ensure_topics

    server = start_pubsub_emulator(workdir, timeout=60)
    try:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host)
        ensure_topics(PUBSUB_PROJECT, [REQUEST_TOPIC], timeout=CALL_TIMEOUT)
    except BaseException:
        server.stop()
        raise
    return server


def _subscribe(project: str) -> str:
    from dispatcher.transport_pubsub import ensure_subscription

    name = f"races-{uuid.uuid4().hex[:8]}"
    ensure_subscription(project, REQUEST_TOPIC, name, timeout=CALL_TIMEOUT)
    return name


def _pull(project: str, subscription: str, expected: int, within: float = 30.0) -> list:
    """Pull and ack until `expected` messages arrived (or `within` s passed), then 1 s more
    to catch any extra; the messages, duplicates included. An empty pull on the emulator
    blocks until its timeout, so each pull waits at most until the deadline."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    from dispatcher.transport_pubsub import subscription_path

    subscriber = pubsub_v1.SubscriberClient()
    path = subscription_path(project, subscription)
    received = []
    deadline = time.monotonic() + within
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                response = subscriber.pull(
                    request={"subscription": path, "max_messages": 1000},
                    timeout=min(CALL_TIMEOUT, max(remaining, 0.2)),
                    retry=None,
                )
            except exceptions.DeadlineExceeded:
                continue
            items = list(response.received_messages)
            if items:
                received.extend(item.message for item in items)
                subscriber.acknowledge(
                    request={"subscription": path, "ack_ids": [i.ack_id for i in items]},
                    timeout=CALL_TIMEOUT,
                )
            elif len(received) >= expected:
                break
            if len(received) >= expected:
                deadline = min(deadline, time.monotonic() + 1.0)
    finally:
        subscriber.close()
    return received


def _pubsub_settings(settings: Settings) -> Settings:
    return settings.with_(transport="pubsub", gcp_project=PUBSUB_PROJECT, publish_timeout_seconds=3)


@pytest.mark.pubsub
def test_pubsub_dead_releases_every_claim_and_a_later_retry_publishes_all(
    pubsub_emulator, settings, expected, tmp_path, monkeypatch
):
    # pubsub_emulator only for its skip / fail-on-CI when no emulator can start.
    settings = _pubsub_settings(settings)
    server = _start_emulator(tmp_path / "first", monkeypatch)
    server.stop()

    started = time.monotonic()
    failed = Dispatcher(settings).retry(GAME_DATE)
    elapsed = time.monotonic() - started

    print(f"retry against a dead emulator failed after {elapsed:.1f} s")
    assert (failed.outcome, failed.exit_code) == ("publish_failed", EXIT_ERROR)
    assert (failed.requests_published, failed.requests_failed) == (0, expected.pending)
    assert elapsed < 20
    assert _new_requests(_ledger(settings), expected) == []  # released, nothing published

    server = _start_emulator(tmp_path / "second", monkeypatch)
    try:
        subscription = _subscribe(PUBSUB_PROJECT)
        result = Dispatcher(settings).retry(GAME_DATE)
        assert (result.outcome, result.exit_code) == ("dispatched", EXIT_OK), result.error
        assert result.requests_published == expected.pending
        messages = _pull(PUBSUB_PROJECT, subscription, expected.pending)
    finally:
        server.stop()
    rows = _ledger(settings)
    _assert_each_pending_published_once(rows, expected)
    assert sorted(m.attributes["request_id"] for m in messages) == sorted(
        expected.request_ids.values()
    )
    confirmed = {r["request_id"]: r["message_id"] for r in _new_requests(rows, expected)}
    assert confirmed == {m.attributes["request_id"]: m.message_id for m in messages}


class _DiesHalfway:
    """A Pub/Sub transport whose emulator is killed once half the batch is acknowledged."""

    kind = "pubsub"

    def __init__(self, server: Server) -> None:
        from dispatcher.transport_pubsub import PubSubTransport

        self.server = server
        self.inner = PubSubTransport(PUBSUB_PROJECT, publish_timeout=3)
        self.acknowledged: list[str] = []

    def publish(self, topic, messages, *, timeout):
        half = len(messages) // 2
        first = self.inner.publish(topic, messages[:half], timeout=timeout)
        assert all(r.ok for r in first), [r.error for r in first if not r.ok][:3]
        self.acknowledged = [r.request_id for r in first]
        self.server.stop()
        return first + self.inner.publish(topic, messages[half:], timeout=timeout)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.pubsub
def test_pubsub_killed_mid_publish_records_exactly_the_acknowledged_half(
    pubsub_emulator, settings, expected, tmp_path, monkeypatch
):
    settings = _pubsub_settings(settings)
    server = _start_emulator(tmp_path / "first", monkeypatch)
    transports: list[_DiesHalfway] = []

    def factory(_warehouse):
        transports.append(_DiesHalfway(server))
        return transports[-1]

    try:
        started = time.monotonic()
        failed = Dispatcher(settings, transport_factory=factory).retry(GAME_DATE)
        elapsed = time.monotonic() - started
    finally:
        server.stop()

    half = expected.pending // 2
    print(f"killed after {half} acks; retry returned after {elapsed:.1f} s")
    assert len(transports) == 1
    assert (failed.outcome, failed.exit_code) == ("publish_failed", EXIT_ERROR)
    assert (failed.requests_published, failed.requests_failed) == (
        half,
        expected.pending - half,
    )
    assert elapsed < 20
    rows = _new_requests(_ledger(settings), expected)
    # The ledger holds exactly the acknowledged requests; the rest were released.
    assert sorted(r["request_id"] for r in rows) == sorted(transports[0].acknowledged)
    assert all(r["published_at"] is not None and r["message_id"] for r in rows)

    server = _start_emulator(tmp_path / "second", monkeypatch)
    try:
        subscription = _subscribe(PUBSUB_PROJECT)
        result = Dispatcher(settings).retry(GAME_DATE)
        assert (result.outcome, result.exit_code) == ("dispatched", EXIT_OK), result.error
        assert result.requests_published == expected.pending - half
        messages = _pull(PUBSUB_PROJECT, subscription, expected.pending - half)
    finally:
        server.stop()
    rows = _ledger(settings)
    _assert_each_pending_published_once(rows, expected)
    rest = set(expected.request_ids.values()) - set(transports[0].acknowledged)
    assert sorted(m.attributes["request_id"] for m in messages) == sorted(rest)


# --- 6. the same race on the BigQuery emulator -----------------------------------------


def test_a_claim_whose_snapshot_predates_a_winner_conflicts_at_the_lock(settings, expected):
    """The DuckDB claim reads the pending mart before it takes the date's lock row: a
    claim that read the players before another one committed them must conflict when
    it writes the lock, not insert them a second time."""
    import duckdb

    from dispatcher import warehouse_duckdb as duck

    loser, winner = connect(settings), connect(settings)
    try:
        params = {"first": GAME_DATE, "last": GAME_DATE, "batch_id": "loser",
                  "trigger_source": "manual", "claimed_at": ledger.utc_now()}  # fmt: skip
        # The claim's own statements, one at a time, around the winner's whole claim.
        loser._execute(duck._ENSURE_LOCK_ROWS, {**params, "dates": [GAME_DATE]})
        con = loser._con
        con.begin()
        loser._execute(duck._SELECT_CLAIMS.format(source=duck.PENDING, forced="", guard=""),
                       params)  # fmt: skip
        assert loser._execute(duck._ANY_CLAIMS, {}).fetchone()[0]
        won = ledger.claim(winner, GAME_DATE, batch_id="winner", trigger_source="manual")
        assert len(won) == expected.pending
        with pytest.raises(duckdb.TransactionException):
            loser._execute(duck._TAKE_LOCK, params)
        con.rollback()
        again = ledger.claim(loser, GAME_DATE, batch_id="loser", trigger_source="manual")
        assert again == []  # the retry reads the winner's claims as in flight
        rows = ledger.requests(winner, GAME_DATE)
        assert Counter(r["batch_id"] for r in rows)["winner"] == expected.pending
        assert "loser" not in {r["batch_id"] for r in rows}
    finally:
        loser.close()
        winner.close()


@pytest.fixture(scope="module")
def bigquery_slate(bigquery_scenarios: Settings) -> tuple[Settings, Expected]:
    """BQ_GAME_DATE written next to the scenario slates.

    The marts are views shared by every date, already built by `bigquery_scenarios` with
    as_of pinned to scenarios.AS_OF; rebuilding them here without that var would change
    "now" for every other module using the shared emulator. So this slate uses the same
    "now": its in-flight rows are leased, its expired claims expired, and a claim made at
    the wall clock (after AS_OF) is inside its lease.
    """
    import scenarios
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from dispatcher.sandbox.load import write_bigquery

    spec = _spec(BQ_GAME_DATE, seed=11, now=scenarios.NOW)
    client = bigquery.Client(
        project=BQ_PROJECT,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=bigquery_scenarios.bigquery_api_endpoint),
    )
    try:
        write_bigquery(client, BQ_PROJECT, generate_slate(spec), include_ledger=True)
    finally:
        client.close()
    return bigquery_scenarios, _expected(spec)


@pytest.mark.bigquery
@pytest.mark.pubsub
def test_four_threads_on_bigquery_request_each_player_once(
    bigquery_slate, pubsub_emulator, monkeypatch
):
    from dispatcher.transport_pubsub import ensure_topics
    from dispatcher.warehouse_bigquery import BigQueryWarehouse

    base, expected = bigquery_slate
    settings = base.with_(transport="pubsub", publish_timeout_seconds=10)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    ensure_topics(BQ_PROJECT, [REQUEST_TOPIC], timeout=CALL_TIMEOUT)
    subscription = _subscribe(BQ_PROJECT)

    # What the emulator answers to each concurrent write of the ledger, for the record.
    answers: list[str] = []
    original = BigQueryWarehouse._job

    def observed(self, sql, params=None):
        writes = "request_ledger" in sql and not sql.lstrip().lower().startswith("select")
        try:
            outcome = original(self, sql, params)
        except Exception as exc:
            if writes:
                answers.append(f"{sql.split()[0]}: {type(exc).__name__}: {exc}"[:400])
            raise
        if writes:
            answers.append(f"{sql.split()[0]}: ok, {outcome[0].num_dml_affected_rows} rows")
        return outcome

    monkeypatch.setattr(BigQueryWarehouse, "_job", observed)

    results = _run_threads(*[lambda: Dispatcher(settings).retry(BQ_GAME_DATE)] * 4)
    messages = _pull(BQ_PROJECT, subscription, expected.pending)

    print("ledger writes:", *answers, sep="\n  ")
    print("results:", [(r.outcome, r.requests_published, r.error) for r in results])
    # The losers find the winner's claims: confirmed (nothing_pending, exit 0) or not yet
    # (in_progress, exit 5: come back later); neither publishes anything.
    losers = [r for r in results if r.outcome != "dispatched"]
    assert len(losers) == 3, [(r.outcome, r.error) for r in results]
    for loser in losers:
        assert (loser.outcome, loser.exit_code) in {
            ("nothing_pending", EXIT_OK), ("in_progress", EXIT_IN_PROGRESS),
        }, loser.error  # fmt: skip
        assert loser.requests_published == 0
    wh = connect(settings)
    try:
        rows = ledger.requests(wh, BQ_GAME_DATE)
    finally:
        wh.close()
    _assert_each_pending_published_once(rows, expected)
    assert sum(r.requests_published for r in results) == expected.pending
    assert [r.outcome for r in results].count("dispatched") == 1
    assert sorted(m.attributes["request_id"] for m in messages) == sorted(
        expected.request_ids.values()
    )
