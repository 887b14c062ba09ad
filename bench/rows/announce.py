"""Rows 9 and 10: the event path through a running `dispatcher serve`.

Row 9: Phase 4 announces (``publish_phase4_completion``) → the emulator's push
subscription → ``POST /trigger`` of a running ``dispatcher serve`` → 450 prediction
requests on the wire. Times are the requests' ``publish_time`` (stamped by the emulator
when it accepted each) minus the moment the announcement started, read by pulling them
back afterwards; the baseline is a direct ``Dispatcher.trigger`` in-process, timed the
same way. Row 10: a redelivery storm, 1,000 POSTs of the same push envelope to ``serve
/trigger`` at concurrency 8: exactly 450 requests (the outbox), no 5xx; the response
times' p50 and p99 against ``GET /health`` at the same concurrency.

Each run starts its own ``dispatcher serve`` (gunicorn, as deployed: one worker, four
threads) on a fresh copy of the one-date warehouse, before the clock, and stops it by
its PID (process group) after.
"""

from __future__ import annotations

import base64
import contextlib
import json
import statistics
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..config import GAME_DATE, PLAYERS_PENDING, REQUEST_TOPIC
from ..infra import (
    BenchError,
    dispatcher_command,
    load_servers,
    progress,
    quiet_stderr,
    warehouse_copy,
)
from ..session import Session, interleave
from ..table import RowResult
from ..warehouses import settings_for

ROW_PUSH, ROW_STORM = 9, 10
GOAL_FIRST, GOAL_LAST = 1.0, 2.0
STORM_POSTS, STORM_CONCURRENCY = 1000, 8
#: --quick sends fewer: each redelivery is a whole (nothing-pending) trigger, ~0.1 s of
#: DuckDB work that one file admits one at a time, so 1,000 take about two minutes.
STORM_POSTS_QUICK = 200
#: The storm's goals (this bench's own): a redelivery is answered well inside Pub/Sub's
#: default 10 s push acknowledgement deadline, past which it would be redelivered again
#: (p99), and typically within a second (p50).
GOAL_STORM_P50, GOAL_STORM_P99 = 1.0, 10.0
CALL_TIMEOUT = 10.0
PULL_WITHIN = 60.0
SERVE_START_TIMEOUT = 60.0
HTTP_TIMEOUT = 30.0
PHASE4_TOPIC = "nba-phase4-precompute-complete"


# --- a `dispatcher serve` of the bench's own ------------------------------------------


@contextlib.contextmanager
def running_serve(s: Session, path: Path, name: str, **env: str) -> Iterator[str]:
    """`dispatcher serve` on the DuckDB file at `path`; yields its URL; stopped by PID."""
    with running_server(s, path, name, **env) as server:
        yield server.url


@contextlib.contextmanager
def running_server(s: Session, path: Path, name: str, **env: str) -> Iterator[Any]:
    """`dispatcher serve` (gunicorn) on the DuckDB file at `path`; yields the started
    Server (its pid is gunicorn's master); stopped by PID."""
    servers = load_servers()
    environ = {k: v for k, v in s.env.items() if not k.startswith("DISPATCHER_")}
    environ.pop("PORT", None)
    environ.update({
        "DISPATCHER_WAREHOUSE": "duckdb", "DISPATCHER_DUCKDB_PATH": str(path),
        "DISPATCHER_DBT_TARGET_PATH": str(path.parent / "target"),
        "DISPATCHER_LOG_FORMAT": "json", **env,
    })  # fmt: skip
    port = servers.free_port()
    url = f"http://{servers.HOST}:{port}"
    log_path = s.workdir / f"{name}-serve-{port}.log"
    argv = [*dispatcher_command(), "serve", "--port", str(port)]
    process = servers._launch(argv, environ, s.workdir, log_path)
    server = servers.Server("dispatcher serve", process.pid, port, url, f"{servers.HOST}:{port}",
                            log_path, process=process)  # fmt: skip
    try:
        servers._wait_ready(server, f"{url}/health", SERVE_START_TIMEOUT, f"Listening at: {url}")
        yield server
    finally:
        server.stop()


#: Straight to 127.0.0.1, whatever *_proxy the environment sets.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(url: str, body: bytes | None = None) -> tuple[int, float]:
    """(status, seconds) of one request; never raises for an HTTP status."""
    request = urllib.request.Request(
        url, data=body, method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json"} if body is not None else {},
    )  # fmt: skip
    started = time.perf_counter()
    try:
        with _OPENER.open(request, timeout=HTTP_TIMEOUT) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        status = exc.code
    return status, time.perf_counter() - started


# --- Pub/Sub helpers ------------------------------------------------------------------


def _admin(project: str, push_endpoint: str | None = None) -> tuple[str, str | None]:
    """Both topics in a project of the run's own, a pull subscription on the requests,
    and (with an endpoint) a push subscription on the completion event; their paths."""
    from google.cloud import pubsub_v1

    from dispatcher.transport_pubsub import (
        bounded_retry,
        ensure_subscription,
        ensure_topics,
        subscription_path,
        topic_path,
    )

    ensure_topics(project, [PHASE4_TOPIC, REQUEST_TOPIC], timeout=CALL_TIMEOUT)
    requests = ensure_subscription(project, REQUEST_TOPIC, "bench-requests",
                                   timeout=CALL_TIMEOUT)  # fmt: skip
    if push_endpoint is None:
        return requests, None
    push = subscription_path(project, "bench-phase4-push")
    subscriber = pubsub_v1.SubscriberClient()
    try:
        subscriber.create_subscription(
            request={"name": push, "topic": topic_path(project, PHASE4_TOPIC),
                     "push_config": {"push_endpoint": push_endpoint},
                     "ack_deadline_seconds": 60},
            timeout=CALL_TIMEOUT, retry=bounded_retry(CALL_TIMEOUT),
        )  # fmt: skip
    finally:
        subscriber.close()
    return requests, push


def _delete_subscription(path: str | None) -> None:
    if path is None:
        return
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    try:
        subscriber.delete_subscription(request={"subscription": path}, timeout=CALL_TIMEOUT)
    except Exception:  # already gone: nothing more to stop
        pass
    finally:
        subscriber.close()


def _publish_times(subscription: str, expected: int) -> list[float]:
    """Pull `expected` messages back (acking them); their publish_time, epoch seconds."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    times: dict[str, float] = {}
    deadline = time.monotonic() + PULL_WITHIN
    try:
        while len(times) < expected and time.monotonic() < deadline:
            try:
                response = subscriber.pull(
                    request={"subscription": subscription, "max_messages": 100},
                    timeout=CALL_TIMEOUT, retry=None,
                )  # fmt: skip
            except exceptions.DeadlineExceeded:
                continue
            for item in response.received_messages:
                times[item.message.message_id] = item.message.publish_time.timestamp()
            if response.received_messages:
                subscriber.acknowledge(
                    request={"subscription": subscription,
                             "ack_ids": [i.ack_id for i in response.received_messages]},
                    timeout=CALL_TIMEOUT,
                )  # fmt: skip
    finally:
        subscriber.close()
    if len(times) != expected:
        raise BenchError(f"pulled {len(times)} of {expected} requests from {subscription}")
    return sorted(times.values())


# --- row 9 ----------------------------------------------------------------------------


def run_push(s: Session) -> list[RowResult]:
    from dispatcher.announce import publish_phase4_completion
    from dispatcher.dispatch import Dispatcher

    template = s.warehouse("one-date")
    host = s.env["PUBSUB_EMULATOR_HOST"]
    first: dict[str, list[float]] = {"measured": [], "baseline": []}
    last: dict[str, list[float]] = {"measured": [], "baseline": []}

    def record(kind: str, started: float, times: list[float]) -> float:
        first[kind].append(times[0] - started)
        last[kind].append(times[-1] - started)
        return times[-1] - started

    def announced() -> float:
        project = f"bench-announce-{uuid.uuid4().hex[:8]}"
        with warehouse_copy(template, s.workdir, "row9") as path, running_serve(
            s, path, "row9", DISPATCHER_TRANSPORT="pubsub", DISPATCHER_GCP_PROJECT=project,
            PUBSUB_EMULATOR_HOST=host,
        ) as url:  # fmt: skip
            requests, push = _admin(project, f"{url}/trigger")
            try:
                with quiet_stderr(s.dispatcher_log):
                    started = time.time()
                    result = publish_phase4_completion(
                        GAME_DATE, project=project, players_processed=PLAYERS_PENDING,
                        players_ready=PLAYERS_PENDING, players_failed=0, timeout=CALL_TIMEOUT,
                        read_counts=False,
                    )  # fmt: skip
                if not result.ok:
                    raise BenchError(f"row 9: announce failed: {result.error}")
                return record("measured", started, _publish_times(requests, PLAYERS_PENDING))
            finally:
                _delete_subscription(push)

    def direct() -> float:
        project = f"bench-direct-{uuid.uuid4().hex[:8]}"
        requests, _ = _admin(project)
        with warehouse_copy(template, s.workdir, "row9-direct") as path:
            dispatcher = Dispatcher(settings_for(path).with_(gcp_project=project))
            with quiet_stderr(s.dispatcher_log):
                started = time.time()
                result = dispatcher.trigger(GAME_DATE)
            if result.requests_published != PLAYERS_PENDING:
                raise BenchError(f"row 9: direct trigger published {result.requests_published}")
            return record("baseline", started, _publish_times(requests, PLAYERS_PENDING))

    progress("row 9: warm-up (one direct trigger)")
    direct()
    first["baseline"].clear()
    last["baseline"].clear()
    _, _, notes = interleave("row 9 (last request)", s.runs[ROW_PUSH], announced, direct)
    how = [
        *notes,
        "measured: `publish_phase4_completion` → emulator push subscription → `POST "
        "/trigger` of a running `dispatcher serve` (gunicorn, 1 worker × 4 threads, "
        "Pub/Sub transport, a fresh process and warehouse copy per run, started before the "
        "clock) → 450 requests; time = each request's emulator publish_time − the "
        "announcement's start (wall clock, same host), read back by a pull afterwards",
        "baseline: `Dispatcher(settings).trigger(D)` in-process, timed the same way "
        "(after one warm-up trigger)",
    ]
    title = "Phase 4 `announce` → push → `dispatcher serve` → 450 requests on the wire"
    return [
        RowResult(
            row=ROW_PUSH,
            label="9a",
            title=f"{title}: first request",
            measured=first["measured"],
            baseline=first["baseline"],
            baseline_label="direct `Dispatcher.trigger` in-process, first request",
            goal_kind="absolute",
            goal=GOAL_FIRST,
            notes=how,
        ),  # fmt: skip
        RowResult(
            row=ROW_PUSH,
            label="9b",
            title=f"{title}: last (450th) request",
            measured=last["measured"],
            baseline=last["baseline"],
            baseline_label="direct `Dispatcher.trigger` in-process, last request",
            goal_kind="absolute",
            goal=GOAL_LAST,
        ),  # fmt: skip
    ]


# --- row 10 ---------------------------------------------------------------------------


def push_envelope(game_date: str) -> bytes:
    event = {"event_type": "phase4_complete", "processor": "ml_feature_store_v2",
             "game_date": game_date, "players_processed": PLAYERS_PENDING,
             "players_ready": PLAYERS_PENDING, "players_failed": 0,
             "timestamp": "2026-03-15T08:31:00Z", "run_id": "bench-storm"}  # fmt: skip
    message = {
        "data": base64.b64encode(json.dumps(event).encode()).decode(),
        "attributes": {"game_date": game_date, "event_type": "phase4_complete"},
        "messageId": "4242", "message_id": "4242",
        "publishTime": "2026-03-15T08:31:01Z", "publish_time": "2026-03-15T08:31:01Z",
    }  # fmt: skip
    return json.dumps(
        {"message": message, "subscription": "projects/bench-project/subscriptions/phase4"}
    ).encode()


def _storm(call: Callable[[], tuple[int, float]], posts: int) -> tuple[list[int], list[float]]:
    with ThreadPoolExecutor(max_workers=STORM_CONCURRENCY) as pool:
        answers = list(pool.map(lambda _i: call(), range(posts)))
    return [status for status, _ in answers], [seconds for _, seconds in answers]


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def _outbox_requests(path: Path) -> tuple[int, int]:
    import duckdb

    with duckdb.connect(str(path), read_only=True) as connection:
        row = connection.execute(
            "select count(*), count(distinct json_extract_string(data, '$.request_id'))"
            " from nba_orchestration.request_outbox where game_date = ?",
            [GAME_DATE],
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def run_storm(s: Session) -> list[RowResult]:
    template = s.warehouse("one-date")
    envelope = push_envelope(GAME_DATE.isoformat())
    p50: dict[str, list[float]] = {"measured": [], "baseline": []}
    p99: dict[str, list[float]] = {"measured": [], "baseline": []}
    checks: list[str] = []
    posts = STORM_POSTS_QUICK if s.args.quick else STORM_POSTS

    def storm() -> float:
        with warehouse_copy(template, s.workdir, "row10") as path:
            with running_serve(s, path, "row10", DISPATCHER_TRANSPORT="local") as url:
                started = time.perf_counter()
                statuses, seconds = _storm(lambda: _http(f"{url}/trigger", envelope), posts)
                wall = time.perf_counter() - started
                # The baseline runs against the same server, before it is stopped.
                health_statuses, health = _storm(lambda: _http(f"{url}/health"), posts)
            published, distinct = _outbox_requests(path)
        faults = sum(1 for status in statuses if status >= 500)
        codes = sorted(set(statuses))
        if faults or published != PLAYERS_PENDING or distinct != PLAYERS_PENDING:
            raise BenchError(
                f"row 10: {faults} answers ≥ 500 (codes {codes}), {published} "
                f"requests ({distinct} distinct) instead of {PLAYERS_PENDING}"
            )
        health_codes = {code: health_statuses.count(code) for code in sorted(set(health_statuses))}
        checks.append(
            f"{published} requests ({distinct} distinct), /trigger codes {codes} (no 5xx), "
            f"storm wall {wall:.1f} s; /health codes {health_codes}"
        )
        p50["measured"].append(statistics.median(seconds))
        p99["measured"].append(_p99(seconds))
        p50["baseline"].append(statistics.median(health))
        p99["baseline"].append(_p99(health))
        return p50["measured"][-1]

    def baseline() -> float:  # measured inside storm(), on the same server
        return p50["baseline"][-1]

    _, _, notes = interleave("row 10 (p50)", s.runs[ROW_STORM], storm, baseline)
    how = [
        *notes,
        f"measured: {posts} POSTs of one push envelope (game date {GAME_DATE}) to "
        f"`serve /trigger`, {STORM_CONCURRENCY} at a time (a new connection each), on a "
        "fresh `dispatcher serve` (1 worker × 4 threads, local outbox) per run; "
        "p50/p99 of the response times of each storm, then their medians over the runs",
        f"baseline: {posts} `GET /health` at the same concurrency, same server, "
        "right after the storm",
        "checked per run: " + "; ".join(checks),
        f"goals (this bench's): p50 ≤ {GOAL_STORM_P50:g} s; p99 ≤ {GOAL_STORM_P99:g} s, "
        "Pub/Sub's default push acknowledgement deadline (a slower answer is redelivered)",
    ]
    title = f"redelivery storm: {posts:,} POSTs of one envelope to `serve /trigger`, c=8"
    return [
        RowResult(
            row=ROW_STORM,
            label="10a",
            title=f"{title}: p50 response",
            measured=p50["measured"],
            baseline=p50["baseline"],
            baseline_label="`GET /health` p50, same concurrency",
            goal_kind="absolute",
            goal=GOAL_STORM_P50,
            notes=how,
        ),  # fmt: skip
        RowResult(
            row=ROW_STORM,
            label="10b",
            title=f"{title}: p99 response",
            measured=p99["measured"],
            baseline=p99["baseline"],
            baseline_label="`GET /health` p99, same concurrency",
            goal_kind="absolute",
            goal=GOAL_STORM_P99,
        ),  # fmt: skip
    ]
