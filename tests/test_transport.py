"""Transports: the local outbox (DuckDB) and Pub/Sub (against the emulator)."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest
from servers import Server, start_pubsub_emulator

from dispatcher.transport import REQUEST_TOPIC, OutgoingMessage
from dispatcher.transport_local import LocalOutboxTransport, ack_outbox, pull_outbox
from dispatcher.warehouse_duckdb import DuckDBWarehouse

CALL_TIMEOUT = 10.0  # seconds, for every single network call in these tests

OUTBOX_DDL = """
create schema if not exists nba_orchestration;
create table nba_orchestration.request_outbox (
    message_id varchar,
    topic varchar,
    game_date date,
    data varchar,
    attributes varchar,
    published_at timestamp,
    acked_at timestamp
);
"""


def _messages(count: int, game_date: str = "2025-01-15") -> list[OutgoingMessage]:
    messages = []
    for i in range(count):
        player = f"player{i:04d}"
        request_id = f"{game_date}:{player}:1"
        body = {
            "request_id": request_id,
            "player_lookup": player,
            "game_date": game_date,
            "game_id": f"20250115_AAA_B{i % 10:02d}",
            "line_values": [20.5 + i % 7],
            "team_abbr": "AAA",
            "opponent_team_abbr": "BBB",
            "is_home": i % 2 == 0,
            "batch_id": "batch-test",
            "trigger_source": "test",
            "requested_at": "2025-01-15T08:31:00Z",
        }
        messages.append(
            OutgoingMessage(
                request_id=request_id,
                data=json.dumps(body).encode(),
                attributes={
                    "request_id": request_id,
                    "game_date": game_date,
                    "player_lookup": player,
                },
            )
        )
    return messages


# --- local outbox -----------------------------------------------------------------------


@pytest.fixture
def duck(tmp_path):
    import duckdb

    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute(OUTBOX_DDL)
    warehouse = DuckDBWarehouse(path)
    yield warehouse
    warehouse.close()


def test_local_publish_writes_one_row_per_message(duck):
    messages = _messages(3)
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)

    results = LocalOutboxTransport(duck).publish(REQUEST_TOPIC, messages, timeout=5)

    after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert [r.request_id for r in results] == [m.request_id for m in messages]
    assert all(r.ok for r in results)
    assert len({r.message_id for r in results}) == 3
    assert all(len(r.message_id) == 32 for r in results)  # uuid4 hex
    rows = [
        tuple(row.values())
        for row in duck.query(
            "select message_id, topic, game_date, data, attributes, published_at, acked_at "
            "from nba_orchestration.request_outbox order by rowid"
        )
    ]
    assert [row[0] for row in rows] == [r.message_id for r in results]
    for row, message in zip(rows, messages, strict=True):
        _, topic, game_date, data, attributes, published_at, acked_at = row
        assert topic == REQUEST_TOPIC
        assert game_date == dt.date(2025, 1, 15)
        assert json.loads(data) == json.loads(message.data)
        assert json.loads(attributes) == message.attributes
        assert before <= published_at <= after  # naive UTC
        assert acked_at is None


def test_local_pull_and_ack_round_trip(duck):
    transport = LocalOutboxTransport(duck)
    first = transport.publish(REQUEST_TOPIC, _messages(3), timeout=5)
    second = transport.publish(REQUEST_TOPIC, _messages(2, "2025-01-16"), timeout=5)
    transport.publish("other-topic", _messages(1), timeout=5)
    published = [r.message_id for r in first + second]

    pulled = pull_outbox(duck, REQUEST_TOPIC, 10)

    assert [m["message_id"] for m in pulled] == published  # oldest first, batch order kept
    assert pulled[0]["attributes"]["player_lookup"] == "player0000"
    assert json.loads(pulled[3]["data"])["game_date"] == "2025-01-16"
    assert pulled[3]["game_date"] == dt.date(2025, 1, 16)
    assert [m["message_id"] for m in pull_outbox(duck, REQUEST_TOPIC, 2)] == published[:2]

    assert ack_outbox(duck, published[:4]) == 4
    assert ack_outbox(duck, published[:4]) == 0  # acking twice changes nothing
    assert [m["message_id"] for m in pull_outbox(duck, REQUEST_TOPIC, 10)] == published[4:]
    assert ack_outbox(duck, [published[4]]) == 1
    assert pull_outbox(duck, REQUEST_TOPIC, 10) == []
    assert len(pull_outbox(duck, "other-topic", 10)) == 1
    acked = duck.query(
        "select count(*) as n from nba_orchestration.request_outbox where acked_at is not null"
    )[0]["n"]
    assert acked == 5


def test_local_publish_without_table_fails_every_message(tmp_path):
    warehouse = DuckDBWarehouse(tmp_path / "empty.duckdb")
    try:
        results = LocalOutboxTransport(warehouse).publish(REQUEST_TOPIC, _messages(3), timeout=5)
    finally:
        warehouse.close()

    assert len(results) == 3
    assert not any(r.ok for r in results)
    assert all(r.message_id is None and "request_outbox" in r.error for r in results)


def test_local_bad_message_fails_alone(duck):
    good = _messages(2)
    no_date = OutgoingMessage("r-no-date", b"{}", {"request_id": "r-no-date"})
    bad_date = OutgoingMessage("r-bad-date", b"{}", {"game_date": "2025-02-30"})

    results = LocalOutboxTransport(duck).publish(
        REQUEST_TOPIC, [good[0], no_date, bad_date, good[1]], timeout=5
    )

    assert [r.ok for r in results] == [True, False, False, True]
    assert "game_date" in results[1].error and results[2].error
    count = duck.query("select count(*) as n from nba_orchestration.request_outbox")[0]["n"]
    assert count == 2


# --- Pub/Sub (emulator) -------------------------------------------------------------------


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _pull_all(project: str, subscription: str, expected: int, within: float = 30.0):
    """Synchronous pull in a loop (the emulator returns at most 100 per call), acking each."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    from dispatcher.transport_pubsub import subscription_path

    subscriber = pubsub_v1.SubscriberClient()
    path = subscription_path(project, subscription)
    received = {}
    deadline = time.monotonic() + within
    try:
        while len(received) < expected and time.monotonic() < deadline:
            try:
                response = subscriber.pull(
                    request={"subscription": path, "max_messages": 1000},
                    timeout=CALL_TIMEOUT,
                    retry=None,
                )
            except exceptions.DeadlineExceeded:
                continue
            assert len(response.received_messages) <= 100
            if not response.received_messages:
                continue
            for item in response.received_messages:
                received[item.message.message_id] = item.message
            subscriber.acknowledge(
                request={
                    "subscription": path,
                    "ack_ids": [item.ack_id for item in response.received_messages],
                },
                timeout=CALL_TIMEOUT,
            )
    finally:
        subscriber.close()
    return received


@pytest.fixture
def pubsub_env(pubsub_emulator: Server, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    return pubsub_emulator


@pytest.mark.pubsub
def test_pubsub_publishes_450_and_they_can_be_pulled_back(pubsub_env):
    from dispatcher.transport_pubsub import PubSubTransport, ensure_subscription, ensure_topics

    project, topic, subscription = _unique("proj"), _unique("req"), _unique("sub")
    ensure_topics(project, [topic], timeout=CALL_TIMEOUT)
    ensure_topics(project, [topic], timeout=CALL_TIMEOUT)  # already there: tolerated
    ensure_subscription(project, topic, subscription, timeout=CALL_TIMEOUT)
    ensure_subscription(project, topic, subscription, timeout=CALL_TIMEOUT)
    messages = _messages(450)

    transport = PubSubTransport(project)
    try:
        started = time.monotonic()
        results = transport.publish(topic, messages, timeout=30)
        elapsed = time.monotonic() - started
    finally:
        transport.close()

    print(f"450 messages published to the emulator in {elapsed:.3f} s")
    assert [r.request_id for r in results] == [m.request_id for m in messages]
    assert all(r.ok for r in results), next(r.error for r in results if not r.ok)
    assert len({r.message_id for r in results}) == 450
    assert elapsed < 10  # batched: ~0.25 s on the emulator; one-by-one would be ~7 s

    received = _pull_all(project, subscription, 450)

    assert set(received) == {r.message_id for r in results}
    by_id = {r.message_id: m for r, m in zip(results, messages, strict=True)}
    for message_id, message in received.items():
        sent = by_id[message_id]
        assert message.data == sent.data
        assert dict(message.attributes) == sent.attributes


@pytest.mark.pubsub
def test_pubsub_missing_topic_fails_every_message_without_raising(pubsub_env):
    from dispatcher.transport_pubsub import PubSubTransport

    transport = PubSubTransport(_unique("proj"), publish_timeout=5)
    try:
        started = time.monotonic()
        results = transport.publish(_unique("nope"), _messages(5), timeout=10)
        elapsed = time.monotonic() - started
    finally:
        transport.close()

    assert len(results) == 5
    assert not any(r.ok for r in results)
    assert all("NotFound" in r.error or "not found" in r.error.lower() for r in results)
    assert elapsed < 10


@pytest.mark.pubsub
def test_pubsub_rejected_message_fails_alone(pubsub_env):
    from dispatcher.transport_pubsub import PubSubTransport, ensure_topics

    project, topic = _unique("proj"), _unique("req")
    ensure_topics(project, [topic], timeout=CALL_TIMEOUT)
    good = _messages(2)
    bad = OutgoingMessage("r-bad", b"{}", {"game_date": 20250115})  # not a string

    transport = PubSubTransport(project)
    try:
        results = transport.publish(topic, [good[0], bad, good[1]], timeout=10)
    finally:
        transport.close()

    assert [r.ok for r in results] == [True, False, True]
    assert "TypeError" in results[1].error


@pytest.mark.pubsub
def test_pubsub_dead_emulator_fails_fast(pubsub_emulator: Server, tmp_path, monkeypatch):
    # pubsub_emulator only for its skip / fail-on-CI when no emulator can start.
    from dispatcher.transport_pubsub import PubSubTransport, ensure_topics

    server = start_pubsub_emulator(tmp_path, timeout=60)
    try:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host)
        project, topic = _unique("proj"), _unique("req")
        ensure_topics(project, [topic], timeout=CALL_TIMEOUT)
        transport = PubSubTransport(project, publish_timeout=3)
    finally:
        server.stop()

    try:
        started = time.monotonic()
        results = transport.publish(topic, _messages(20), timeout=15)
        elapsed = time.monotonic() - started
    finally:
        transport.close()

    print(f"dead emulator: 20 publishes failed after {elapsed:.2f} s")
    assert elapsed < 30
    assert len(results) == 20
    assert not any(r.ok for r in results)
    assert all(r.error and r.message_id is None for r in results)


@pytest.mark.pubsub
def test_pubsub_hung_emulator_fails_within_publish_timeout(
    pubsub_emulator: Server, tmp_path, monkeypatch
):
    """A server that accepts connections but never answers (SIGSTOP): the per-RPC timeout,
    not the library's 600 s default, decides."""
    import os
    import signal

    from dispatcher.transport_pubsub import PubSubTransport, ensure_topics

    server = start_pubsub_emulator(tmp_path, timeout=60)
    try:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host)
        project, topic = _unique("proj"), _unique("req")
        ensure_topics(project, [topic], timeout=CALL_TIMEOUT)
        transport = PubSubTransport(project, publish_timeout=3)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = transport.publish(topic, _messages(20), timeout=15)
            elapsed = time.monotonic() - started
        finally:
            os.kill(server.pid, signal.SIGCONT)
            transport.close()
    finally:
        server.stop()

    print(f"hung emulator: 20 publishes failed after {elapsed:.2f} s")
    assert elapsed < 20
    assert not any(r.ok for r in results)
    assert all(r.error for r in results)
