"""Real push delivery: the Pub/Sub emulator pushes completion events to a real
`dispatcher serve` (gunicorn), which publishes the prediction requests back to the
emulator. A malformed event is refused (400) until the subscription's dead-letter policy
moves it to the dead-letter topic. Rollback: without the push subscription nothing is
dispatched by the event, and the Scheduler's POST /start does it all."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest
from serving import call, log_lines, serve_env, start_serve
from test_serve import READY, SPECS, footprint
from warehouses import build_template, copy_of

COMPLETION_TOPIC = "nba-phase4-precompute-complete"
PUSH_SUBSCRIPTION = "nba-phase5-trigger-sub"
DEAD_LETTER_TOPIC = "nba-phase5-trigger-dlq"
REQUEST_TOPIC = "prediction-request"
CALL_TIMEOUT = 10.0
MAX_DELIVERY_ATTEMPTS = 5

pytestmark = pytest.mark.pubsub


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(tmp_path_factory.mktemp("serve-pubsub"), [SPECS[READY]])


@pytest.fixture
def project(pubsub_emulator, monkeypatch):
    """A fresh emulator project with the completion topic, its dead-letter topic (and a
    pull subscription on it) and prediction-request (with a pull subscription)."""
    from dispatcher.transport_pubsub import ensure_subscription, ensure_topics

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    name = f"serve-{uuid.uuid4().hex[:8]}"
    ensure_topics(name, [COMPLETION_TOPIC, DEAD_LETTER_TOPIC, REQUEST_TOPIC],
                  timeout=CALL_TIMEOUT)  # fmt: skip
    ensure_subscription(name, DEAD_LETTER_TOPIC, "dlq-pull", timeout=CALL_TIMEOUT)
    ensure_subscription(name, REQUEST_TOPIC, "worker", timeout=CALL_TIMEOUT)
    return name


@pytest.fixture
def server(template, tmp_path, project, pubsub_emulator):
    """`dispatcher serve` on a DuckDB copy, publishing to the emulator; no
    DISPATCHER_PUSH_AUDIENCE (the emulator's pushes carry no Authorization header)."""
    settings = copy_of(template, tmp_path)
    env = serve_env(settings, DISPATCHER_TRANSPORT="pubsub", DISPATCHER_GCP_PROJECT=project,
                    PUBSUB_EMULATOR_HOST=pubsub_emulator.host)  # fmt: skip
    started = start_serve(tmp_path, env)
    started.settings = settings  # type: ignore[attr-defined]
    yield started
    started.stop()


def create_push_subscription(project: str, endpoint: str) -> str:
    from google.cloud import pubsub_v1
    from google.protobuf import duration_pb2

    from dispatcher.transport_pubsub import subscription_path, topic_path

    subscriber = pubsub_v1.SubscriberClient()
    path = subscription_path(project, PUSH_SUBSCRIPTION)
    try:
        subscriber.create_subscription(
            request={
                "name": path,
                "topic": topic_path(project, COMPLETION_TOPIC),
                "push_config": {"push_endpoint": endpoint},
                "ack_deadline_seconds": 60,
                "retry_policy": {
                    "minimum_backoff": duration_pb2.Duration(seconds=1),
                    "maximum_backoff": duration_pb2.Duration(seconds=2),
                },
                "dead_letter_policy": {
                    "dead_letter_topic": topic_path(project, DEAD_LETTER_TOPIC),
                    "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
                },
            },
            timeout=CALL_TIMEOUT,
        )
    finally:
        subscriber.close()
    return path


def delete_push_subscription(project: str) -> None:
    from google.cloud import pubsub_v1

    from dispatcher.transport_pubsub import subscription_path

    subscriber = pubsub_v1.SubscriberClient()
    try:
        subscriber.delete_subscription(
            request={"subscription": subscription_path(project, PUSH_SUBSCRIPTION)},
            timeout=CALL_TIMEOUT,
        )
    finally:
        subscriber.close()


def publish(project: str, data: bytes) -> str:
    from google.cloud import pubsub_v1

    from dispatcher.transport_pubsub import topic_path

    publisher = pubsub_v1.PublisherClient()
    try:
        future = publisher.publish(topic_path(project, COMPLETION_TOPIC), data, source="phase4")
        return future.result(timeout=CALL_TIMEOUT)
    finally:
        publisher.transport.close()


def pull(project: str, subscription: str, expected: int, within: float) -> list:
    """Pull (and ack) until `expected` messages came or `within` seconds passed."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    from dispatcher.transport_pubsub import subscription_path

    subscriber = pubsub_v1.SubscriberClient()
    path = subscription_path(project, subscription)
    received: dict[str, object] = {}
    deadline = time.monotonic() + within
    try:
        while len(received) < expected and time.monotonic() < deadline:
            try:
                response = subscriber.pull(
                    request={"subscription": path, "max_messages": 100},
                    timeout=min(3.0, max(deadline - time.monotonic(), 0.5)),
                )
            except exceptions.DeadlineExceeded:
                continue
            if not response.received_messages:
                continue
            for item in response.received_messages:
                received[item.message.message_id] = item.message
            subscriber.acknowledge(
                request={"subscription": path,
                         "ack_ids": [m.ack_id for m in response.received_messages]},
                timeout=CALL_TIMEOUT,
            )  # fmt: skip
    finally:
        subscriber.close()
    return list(received.values())


def _trigger_lines(server, status: int, at_least: int = 0, within: float = 10) -> list[dict]:
    """The server's log lines of POST /trigger answered `status`, once there are at least
    `at_least` (the line is written just after the answer's dispatch finished)."""
    deadline = time.monotonic() + within
    while True:
        entries = [json.loads(line) for line in log_lines(server)[1:]]
        found = [e for e in entries if e.get("path") == "/trigger" and e.get("status") == status
                 and e["message"].startswith("POST")]  # fmt: skip
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_a_pushed_completion_event_publishes_every_pending_request(server, project):
    create_push_subscription(project, f"{server.url}/trigger")
    pending = SPECS[READY].counts().pending
    message_id = publish(project, json.dumps({"event_type": "phase4_complete",
                                              "game_date": str(READY)}).encode())  # fmt: skip
    requests = pull(project, "worker", pending, within=60)
    assert len(requests) == pending
    bodies = [json.loads(m.data) for m in requests]
    assert len({b["player_lookup"] for b in bodies}) == pending
    assert {b["trigger_source"] for b in bodies} == {"pubsub"}
    assert {b["game_date"] for b in bodies} == {str(READY)}
    delivered = _trigger_lines(server, 200, at_least=1)
    assert [e["message_id"] for e in delivered] == [message_id]  # acknowledged once
    # Nothing more arrives: the push was acknowledged, so nothing is redelivered.
    assert pull(project, "worker", 1, within=4) == []


def test_a_malformed_event_is_refused_until_it_is_dead_lettered(server, project):
    create_push_subscription(project, f"{server.url}/trigger")
    before = footprint(server.settings)
    message_id = publish(project, b'{"game_date": "2026-02-30"}')
    dead = pull(project, "dlq-pull", 1, within=90)
    assert [m.data for m in dead] == [b'{"game_date": "2026-02-30"}']
    assert dead[0].attributes["source"] == "phase4"
    refused = _trigger_lines(server, 400, at_least=MAX_DELIVERY_ATTEMPTS)
    assert len(refused) == MAX_DELIVERY_ATTEMPTS  # then the dead-letter policy took it
    assert {e["message_id"] for e in refused} == {message_id}
    assert footprint(server.settings) == before  # nothing claimed, nothing in the run log
    assert pull(project, "worker", 1, within=3) == []


def test_rollback_without_the_push_subscription_the_scheduler_start_dispatches(server, project):
    create_push_subscription(project, f"{server.url}/trigger")
    delete_push_subscription(project)  # the rollback
    before = footprint(server.settings)
    publish(project, json.dumps({"game_date": str(READY)}).encode())
    assert pull(project, "worker", 1, within=5) == []
    assert _trigger_lines(server, 200, within=0) == [] and footprint(server.settings) == before

    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    status, body, _ = call(f"{server.url}/start", "POST", b'{"game_date": "2026-11-28"}', {
        "Content-Type": "application/octet-stream", "X-CloudScheduler": "true",
        "X-CloudScheduler-JobName": "nba-phase5-start",
        "X-CloudScheduler-ScheduleTime": long_ago.isoformat().replace("+00:00", "Z"),
    })  # fmt: skip
    pending = SPECS[READY].counts().pending
    assert status == 200, body
    assert (body["outcome"], body["trigger_source"]) == ("dispatched", "scheduler")
    assert body["requests_published"] == pending
    requests = pull(project, "worker", pending, within=60)
    assert len({json.loads(m.data)["player_lookup"] for m in requests}) == pending
