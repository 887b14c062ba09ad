"""`dispatcher announce` and publish_phase4_completion: the Phase 4 completion event on the
emulator, its counts from the readiness mart, and the two promises (never raises, never
blocks past its timeout) with Pub/Sub absent, a black hole, or stopped."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from servers import HOST, Server, free_port, start_pubsub_emulator

from dispatcher import announce
from dispatcher.announce import completion_message, publish_phase4_completion
from dispatcher.events import parse_phase4_event
from dispatcher.transport import PHASE4_TOPIC

DISPATCHER = Path(sys.executable).with_name("dispatcher")
DATE = dt.date(2026, 11, 28)
TODAY = dt.date(2026, 12, 1)  # any day the contract's date rule accepts DATE on
CALL_TIMEOUT = 10.0
#: The bound under test: a 2 s announcement returns within 2 + SLACK seconds.
BOUND_TIMEOUT = 2.0
SLACK = 1.5
#: A new process also pays for its start (click, the dispatcher) and its exit.
PROCESS_SLACK = 3.5
CONTRACT_KEYS = {
    "event_type", "processor", "game_date", "players_processed", "players_ready",
    "players_failed", "timestamp", "run_id",
}  # fmt: skip


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _today() -> dt.date:
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo("America/Los_Angeles")).date()


# --- the message, and input that never raises -------------------------------------------


def test_message_is_the_contracts_and_the_dispatcher_accepts_it():
    at = dt.datetime(2026, 11, 28, 8, 31, tzinfo=dt.UTC)
    body = completion_message(DATE, players_processed=450, players_ready=440,
                              players_failed=10, run_id="run-1", timestamp=at)  # fmt: skip

    assert body == {
        "event_type": "phase4_complete", "processor": "ml_feature_store_v2",
        "game_date": "2026-11-28", "players_processed": 450, "players_ready": 440,
        "players_failed": 10, "timestamp": "2026-11-28T08:31:00Z", "run_id": "run-1",
    }  # fmt: skip
    event = parse_phase4_event(json.dumps(body), today=TODAY)
    assert (event.game_date, event.players_ready, event.run_id) == (DATE, 440, "run-1")
    assert event.timestamp == at
    # Unknown counts are left out (only game_date is required); a run id is made up.
    bare = completion_message(DATE)
    assert set(bare) == CONTRACT_KEYS - {"players_processed", "players_ready", "players_failed"}
    assert len(bare["run_id"]) == 32


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"game_date": "2026-02-30"}, "not a calendar date"),
        ({"game_date": "28/11/2026"}, "YYYY-MM-DD"),
        ({"game_date": None}, "game_date must be"),
        ({"players_ready": -1}, "players_ready must be a non-negative integer"),
        ({"players_failed": True}, "players_failed must be a non-negative integer"),
        ({"timeout": 0}, "timeout must be a positive"),
        ({"timeout": float("nan")}, "timeout must be a positive"),
        ({"project": None}, "DISPATCHER_GCP_PROJECT"),
        ({"run_id": 7}, "run_id must be a string"),
    ],
)
def test_bad_input_is_a_failed_result_never_an_exception(kwargs, says, monkeypatch):
    monkeypatch.delenv("DISPATCHER_GCP_PROJECT", raising=False)
    args = {"game_date": DATE, "project": "nba-props", "read_counts": False, **kwargs}
    date = args.pop("game_date")

    result = publish_phase4_completion(date, **args)

    assert not result.ok and result.message_id is None
    assert says in result.error and "\n" not in result.error


def test_settings_that_cannot_load_are_a_failed_result(monkeypatch, tmp_path):
    monkeypatch.setenv("DISPATCHER_PUBLISH_TIMEOUT", "abc")
    result = publish_phase4_completion(DATE, project="nba-props", read_counts=False)
    assert not result.ok and "DISPATCHER_PUBLISH_TIMEOUT" in result.error
    monkeypatch.delenv("DISPATCHER_PUBLISH_TIMEOUT")
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("DISPATCHER_BIGQUERY_KEYFILE", str(tmp_path / "no-key.json"))
    result = publish_phase4_completion(DATE, project="nba-props", read_counts=False, timeout=2)
    assert not result.ok and "no such file" in result.error


# --- on the emulator ---------------------------------------------------------------------


@pytest.fixture
def pubsub_env(pubsub_emulator: Server, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    return pubsub_emulator


def _topic_with_subscription(project: str) -> str:
    from dispatcher.transport_pubsub import ensure_subscription, ensure_topics

    subscription = _unique("phase4-sub")
    ensure_topics(project, [PHASE4_TOPIC], timeout=CALL_TIMEOUT)
    ensure_subscription(project, PHASE4_TOPIC, subscription, timeout=CALL_TIMEOUT)
    return subscription


def _pull(project: str, subscription: str, expected: int, within: float = 30.0) -> list:
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    from dispatcher.transport_pubsub import subscription_path

    subscriber = pubsub_v1.SubscriberClient()
    path = subscription_path(project, subscription)
    received: list = []
    deadline = time.monotonic() + within
    try:
        while len(received) < expected and time.monotonic() < deadline:
            try:
                response = subscriber.pull(request={"subscription": path, "max_messages": 10},
                                           timeout=CALL_TIMEOUT, retry=None)  # fmt: skip
            except exceptions.DeadlineExceeded:
                continue
            if response.received_messages:
                received.extend(item.message for item in response.received_messages)
                subscriber.acknowledge(
                    request={"subscription": path,
                             "ack_ids": [i.ack_id for i in response.received_messages]},
                    timeout=CALL_TIMEOUT,
                )  # fmt: skip
    finally:
        subscriber.close()
    return received


@pytest.mark.pubsub
def test_published_event_pulled_back_is_the_contract(pubsub_env):
    project = _unique("proj")
    subscription = _topic_with_subscription(project)

    result = publish_phase4_completion(
        DATE, project=project, players_processed=450, players_ready=440, players_failed=10,
        run_id="phase4-run-42", timeout=CALL_TIMEOUT, read_counts=False,
    )  # fmt: skip

    assert result.ok, result.error
    assert result.message_id and result.counts_source == "given"
    assert result.topic == f"projects/{project}/topics/{PHASE4_TOPIC}"
    (message,) = _pull(project, subscription, 1)
    assert message.message_id == result.message_id
    body = json.loads(message.data)
    assert body == result.message
    assert set(body) == CONTRACT_KEYS
    assert body["event_type"] == "phase4_complete" and body["processor"] == "ml_feature_store_v2"
    assert (body["game_date"], body["players_processed"], body["players_ready"],
            body["players_failed"], body["run_id"]) == ("2026-11-28", 450, 440, 10,
                                                        "phase4-run-42")  # fmt: skip
    stamp = dt.datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 60
    assert dict(message.attributes) == {"game_date": "2026-11-28", "event_type": "phase4_complete"}
    event = parse_phase4_event(message.data, today=_today())
    assert (event.game_date, event.players_processed) == (DATE, 450)


@pytest.fixture(scope="module")
def readiness_template(tmp_path_factory) -> Path:
    from warehouses import build_template

    from dispatcher.sandbox.slate import SlateSpec

    return build_template(tmp_path_factory.mktemp("announce-warehouse"),
                          [SlateSpec(game_date=DATE, seed=7)])  # fmt: skip


@pytest.mark.pubsub
def test_counts_come_from_the_readiness_mart(pubsub_env, readiness_template, tmp_path):
    from warehouses import copy_of

    from dispatcher import marts
    from dispatcher.warehouse import connect

    project = _unique("proj")
    subscription = _topic_with_subscription(project)
    settings = copy_of(readiness_template, tmp_path).with_(gcp_project=project)
    warehouse = connect(settings)
    try:
        row = marts.readiness(warehouse, DATE)
    finally:
        warehouse.close()
    assert row is not None and row["players_in_feature_store"] > row["players_ready"] > 0

    result = publish_phase4_completion(DATE, settings=settings, timeout=CALL_TIMEOUT)
    mixed = publish_phase4_completion(DATE, settings=settings, players_failed=3,
                                      timeout=CALL_TIMEOUT)  # fmt: skip

    assert result.ok and mixed.ok, (result.error, mixed.error)
    expected = {
        "players_processed": row["players_in_feature_store"],
        "players_ready": row["players_ready"],
        "players_failed": row["players_in_feature_store"] - row["players_ready"],
    }
    assert result.counts_source == "readiness" and result.counts_error is None
    assert {k: result.message[k] for k in expected} == expected
    assert mixed.counts_source == "mixed"
    assert mixed.message["players_failed"] == 3
    assert mixed.message["players_ready"] == row["players_ready"]
    bodies = sorted((json.loads(m.data) for m in _pull(project, subscription, 2)),
                    key=lambda body: body.get("players_failed") == 3)  # fmt: skip
    assert bodies == [result.message, mixed.message]


@pytest.mark.pubsub
def test_a_mart_that_does_not_answer_is_skipped_within_the_bound(pubsub_env, monkeypatch):
    """The mart read gets half the time; past it the event goes out without counts."""
    project = _unique("proj")
    subscription = _topic_with_subscription(project)
    never = threading.Event()
    monkeypatch.setattr(announce, "_read_counts", lambda *_args: never.wait(60))

    started = time.monotonic()
    result = publish_phase4_completion(DATE, project=project, timeout=4)
    elapsed = time.monotonic() - started
    never.set()

    assert result.ok, result.error
    assert elapsed < 4 + SLACK
    assert result.counts_source == "none" and "did not answer in time" in result.counts_error
    (message,) = _pull(project, subscription, 1)
    assert "players_ready" not in json.loads(message.data)


def _cli(args: list[str], cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("DISPATCHER_") and k != "PUBSUB_EMULATOR_HOST"}  # fmt: skip
    environ.update(DISPATCHER_DUCKDB_PATH=str(cwd / "none.duckdb"), **env)
    started = time.monotonic()
    out = subprocess.run([str(DISPATCHER), *args], cwd=cwd, env=environ,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    return out, time.monotonic() - started


@pytest.mark.pubsub
def test_cli_prints_the_message_id_and_honours_json(pubsub_env, tmp_path):
    pubsub_emulator = pubsub_env
    project = _unique("proj")
    subscription = _topic_with_subscription(project)
    env = {"DISPATCHER_GCP_PROJECT": project, "PUBSUB_EMULATOR_HOST": pubsub_emulator.host}

    plain, _ = _cli(["announce", "--game-date", "2026-11-28", "--players-ready", "5"],
                    tmp_path, **env)  # fmt: skip
    as_json, _ = _cli(["announce", "--game-date", "2026-11-28", "--json"], tmp_path, **env)

    assert plain.returncode == 0, plain.stderr
    message_id = plain.stdout.strip()
    assert message_id and "\n" not in message_id
    assert as_json.returncode == 0, as_json.stderr
    payload = json.loads(as_json.stdout)
    assert payload["ok"] and payload["error"] is None and payload["message_id"]
    # No warehouse at DISPATCHER_DUCKDB_PATH: the counts are left out, and it says why.
    assert payload["counts_source"] == "none" and "none.duckdb" in payload["counts_error"]
    received = {m.message_id: json.loads(m.data) for m in _pull(project, subscription, 2)}
    assert received[message_id]["players_ready"] == 5
    assert received[payload["message_id"]] == payload["message"]
    logged = [json.loads(line) for line in plain.stderr.splitlines() if line.startswith("{")]
    assert [entry["message"] for entry in logged] == ["phase 4 completion published"]
    assert logged[0]["message_id"] == message_id


def test_cli_without_a_project_is_a_usage_error(tmp_path):
    out, _ = _cli(["announce", "--game-date", "2026-11-28"], tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "Usage:" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "DISPATCHER_GCP_PROJECT" in errors[0]


# --- the bound: nobody listening, a black hole, a stopped emulator -----------------------


class BlackHole:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((HOST, 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="black-hole", daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"{HOST}:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(connection)  # held open, never read, never answered

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in self.accepted:
            connection.close()
        self._sock.close()


@pytest.fixture
def black_hole():
    server = BlackHole()
    yield server
    server.stop()


def _assert_bounded(result, elapsed: float, host: str) -> None:
    print(f"announce failed after {elapsed:.2f} s: {result.error}")
    assert elapsed < BOUND_TIMEOUT + SLACK
    assert not result.ok and result.message_id is None
    assert "\n" not in result.error
    assert PHASE4_TOPIC in result.error and host in result.error
    assert f"within {BOUND_TIMEOUT:g} s" in result.error


def _announce_timed(project: str = "nba-props"):
    started = time.monotonic()
    result = publish_phase4_completion(DATE, project=project, players_ready=1,
                                       timeout=BOUND_TIMEOUT)  # fmt: skip
    return result, time.monotonic() - started


def test_nobody_listening_returns_within_the_bound(monkeypatch):
    host = f"{HOST}:{free_port()}"
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host)
    result, elapsed = _announce_timed()
    _assert_bounded(result, elapsed, host)


def test_a_black_hole_returns_within_the_bound(black_hole, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", black_hole.host)
    result, elapsed = _announce_timed()
    _assert_bounded(result, elapsed, black_hole.host)
    assert black_hole.accepted  # the client did connect, and got no answer


@pytest.mark.parametrize("target", ["nobody listening", "black hole"])
def test_cli_fails_in_one_line_within_the_bound(target, black_hole, tmp_path):
    host = black_hole.host if target == "black hole" else f"{HOST}:{free_port()}"
    out, elapsed = _cli(["announce", "--game-date", "2026-11-28", "--timeout",
                         f"{BOUND_TIMEOUT:g}"], tmp_path,
                        DISPATCHER_GCP_PROJECT="nba-props", PUBSUB_EMULATOR_HOST=host)  # fmt: skip

    print(f"{target}: exit {out.returncode} after {elapsed:.2f} s: {out.stderr.strip()[-300:]}")
    assert out.returncode == 1
    assert elapsed < BOUND_TIMEOUT + PROCESS_SLACK
    assert "Traceback" not in out.stdout + out.stderr
    assert out.stdout == ""
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out.stderr
    assert all(part in errors[0] for part in (
        f"projects/nba-props/topics/{PHASE4_TOPIC}", host, f"within {BOUND_TIMEOUT:g} s"
    ))  # fmt: skip


@pytest.mark.pubsub
def test_a_stopped_emulator_returns_within_the_bound(pubsub_emulator, tmp_path, monkeypatch):
    # pubsub_emulator only for its skip / fail-on-CI when no emulator can start.
    server = start_pubsub_emulator(tmp_path, timeout=60)
    try:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host)
        project = _unique("proj")
        _topic_with_subscription(project)
    finally:
        server.stop()

    result, elapsed = _announce_timed(project)

    _assert_bounded(result, elapsed, server.host)


def test_cli_json_failure_is_one_object_and_exit_1(tmp_path):
    host = f"{HOST}:{free_port()}"
    out, elapsed = _cli(["announce", "--game-date", "2026-11-28", "--timeout", "2", "--json"],
                        tmp_path, DISPATCHER_GCP_PROJECT="nba-props",
                        PUBSUB_EMULATOR_HOST=host)  # fmt: skip

    assert out.returncode == 1 and elapsed < BOUND_TIMEOUT + PROCESS_SLACK
    assert "Traceback" not in out.stdout + out.stderr
    payload = json.loads(out.stdout)
    assert payload["ok"] is False and payload["message_id"] is None
    assert PHASE4_TOPIC in payload["error"] and host in payload["error"]
    assert payload["host"] == f"emulator {host}" and payload["timeout"] == 2.0
