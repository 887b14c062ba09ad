"""The emulators the suite depends on start, answer real client calls, and stop cleanly."""

from __future__ import annotations

import datetime as dt
import socket
import time
import uuid
from pathlib import Path

import pytest
import servers
from servers import Server, http_ok, pid_is_running, port_is_free, start_pubsub_emulator

CALL_TIMEOUT = 10.0  # seconds, for every single network call below


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _run_query(client, sql: str, params=()):
    from google.cloud import bigquery

    job_config = bigquery.QueryJobConfig(query_parameters=list(params))
    job = client.query(
        sql,
        job_config=job_config,
        retry=bigquery.DEFAULT_RETRY.with_deadline(CALL_TIMEOUT),
        # An emulator 500 would otherwise be retried until the job deadline.
        job_retry=None,
        timeout=CALL_TIMEOUT,
    )
    return list(job.result(timeout=CALL_TIMEOUT))


# --- BigQuery API emulator --------------------------------------------------------------


@pytest.mark.bigquery
def test_bigquery_emulator_answers_select_1(bigquery_client):
    rows = _run_query(bigquery_client, "SELECT 1 AS one")

    assert [tuple(row.values()) for row in rows] == [(1,)]


@pytest.mark.bigquery
def test_bigquery_partitioned_table_round_trip_with_query_parameter(bigquery_client):
    from google.cloud import bigquery

    dataset = f"nba-test.{_unique('servers_smoke')}"
    _run_query(bigquery_client, f"CREATE SCHEMA `{dataset}`")
    try:
        _run_query(
            bigquery_client,
            f"""
            CREATE TABLE `{dataset}.games` (
                game_id STRING NOT NULL,
                game_date DATE NOT NULL,
                home_points INT64
            )
            PARTITION BY game_date
            """,
        )
        _run_query(
            bigquery_client,
            f"""
            INSERT INTO `{dataset}.games` (game_id, game_date, home_points)
            VALUES
                ('0022400001', DATE '2024-10-22', 132),
                ('0022400002', DATE '2024-10-22', 110),
                ('0022400003', DATE '2024-10-23', 97)
            """,
        )

        rows = _run_query(
            bigquery_client,
            f"""
            SELECT game_id, home_points
            FROM `{dataset}.games`
            WHERE game_date = @game_date
            ORDER BY game_id
            """,
            [bigquery.ScalarQueryParameter("game_date", "DATE", dt.date(2024, 10, 22))],
        )

        assert [(row.game_id, row.home_points) for row in rows] == [
            ("0022400001", 132),
            ("0022400002", 110),
        ]
    finally:
        _run_query(bigquery_client, f"DROP SCHEMA IF EXISTS `{dataset}` CASCADE")


# --- Pub/Sub emulator -------------------------------------------------------------------


@pytest.mark.pubsub
def test_pubsub_emulator_publish_and_pull(pubsub_emulator: Server, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    from google.api_core.retry import Retry
    from google.cloud import pubsub_v1

    # The default publish retry deadline is 600 s: a dead emulator would hang the test.
    retry = Retry(initial=0.1, maximum=1.0, deadline=CALL_TIMEOUT)
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        topic = publisher.topic_path("nba-test", _unique("phase5-requests"))
        subscription = subscriber.subscription_path("nba-test", _unique("phase5-requests-sub"))
        publisher.create_topic(request={"name": topic}, timeout=CALL_TIMEOUT)
        subscriber.create_subscription(
            request={"name": subscription, "topic": topic, "ack_deadline_seconds": 10},
            timeout=CALL_TIMEOUT,
        )

        futures = [
            publisher.publish(
                topic,
                f"game {n}".encode(),
                retry=retry,
                timeout=CALL_TIMEOUT,
                game_date="2024-10-22",
            )
            for n in range(3)
        ]
        message_ids = [future.result(timeout=CALL_TIMEOUT) for future in futures]
        assert len(set(message_ids)) == 3

        received = {}
        deadline = time.monotonic() + CALL_TIMEOUT
        while len(received) < 3 and time.monotonic() < deadline:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": 10},
                timeout=CALL_TIMEOUT,
            )
            if response.received_messages:
                subscriber.acknowledge(
                    request={
                        "subscription": subscription,
                        "ack_ids": [m.ack_id for m in response.received_messages],
                    },
                    timeout=CALL_TIMEOUT,
                )
            for m in response.received_messages:
                received[m.message.message_id] = m.message

        assert sorted(received) == sorted(message_ids)
        assert sorted(m.data for m in received.values()) == [b"game 0", b"game 1", b"game 2"]
        assert {m.attributes["game_date"] for m in received.values()} == {"2024-10-22"}
    finally:
        subscriber.close()
        publisher.stop()


# --- Start and stop ---------------------------------------------------------------------


def _connection_refused(port: int) -> bool:
    try:
        socket.create_connection((servers.HOST, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


@pytest.mark.pubsub
def test_stop_ends_only_that_server_and_frees_its_port(pubsub_emulator: Server, tmp_path):
    # Requesting the session emulator first: without a Cloud SDK this skips (or fails on CI).
    second = start_pubsub_emulator(tmp_path, timeout=60)
    try:
        assert second.pid != pubsub_emulator.pid
        assert second.port != pubsub_emulator.port
        assert http_ok(f"{second.url}/")
    finally:
        second.stop()

    assert not pid_is_running(second.pid)
    assert port_is_free(second.port)
    assert _connection_refused(second.port)
    second.stop()  # idempotent
    assert http_ok(f"{pubsub_emulator.url}/"), "stopping one server must not touch another"


@pytest.mark.pubsub
def test_pubsub_start_retries_when_its_port_is_taken(
    pubsub_emulator: Server, tmp_path, monkeypatch
):
    # Hand out a port someone is listening on: the JVM logs BindException and keeps running.
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind((servers.HOST, 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real_free_port = servers.free_port
    ports = iter([taken])
    monkeypatch.setattr(servers, "free_port", lambda: next(ports, None) or real_free_port())

    try:
        server = start_pubsub_emulator(tmp_path, timeout=60)
    finally:
        squatter.close()
    try:
        assert server.port != taken
        assert http_ok(f"{server.url}/")
        failed_log = tmp_path / f"pubsub-emulator-{taken}.log"
        assert "BindException" in failed_log.read_text()
        assert _pids_with_arg(f"--port={taken}") == [], "the failed JVM must be stopped"
    finally:
        server.stop()
    assert not pid_is_running(server.pid)


def _pids_with_arg(arg: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if arg.encode() in cmdline.read_bytes().split(b"\0"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids
