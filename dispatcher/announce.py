"""Phase 4's side of the contract: publish the completion event that wakes the dispatcher.

``publish_phase4_completion(game_date, ...)`` is what the Phase 4 processor
(``ml_feature_store_v2``) calls once its run is written; ``dispatcher announce`` is the
same call from a shell. Two promises, because a Phase 4 run must never fail or stall
because of its notification:

- it **never raises**: any failure (bad input, settings, Pub/Sub down, slow or a black
  hole) is an ``AnnounceResult(ok=False, error="one line")``;
- it **never blocks past its timeout**, all included: the settings, the optional mart
  read (given at most half the time; on overrun the counts are left out), the
  google-cloud import, the client's creation and the publish. The publish carries an
  explicit ``Retry`` with a deadline and a per-call timeout, and runs in a daemon
  thread joined with the time left, because the client can hang on channel set-up
  where no RPC timeout applies. A publish abandoned that way is reported failed,
  outcome unknown (the dispatcher takes a duplicate event in its stride: claims never
  request a player twice).

The counts, when not passed, come from the readiness mart (``fct_phase4_readiness``)
of the configured warehouse:

- ``players_processed`` = ``players_in_feature_store`` (expected players with a
  Phase 4 feature row),
- ``players_ready`` = ``players_ready`` (those rows production ready),
- ``players_failed`` = ``players_in_feature_store - players_ready`` (a row, not
  production ready), so that processed = ready + failed as in the contract's example.

A count passed wins over the mart's; without a warehouse, a row for the date, or in
time, the missing counts are left out (only ``game_date`` is required by the contract).
google.cloud.pubsub_v1 is imported only when a publish is attempted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from . import logs
from .transport import PHASE4_TOPIC

if TYPE_CHECKING:
    from .config import Settings

EVENT_TYPE = "phase4_complete"
PROCESSOR = "ml_feature_store_v2"
DEFAULT_TIMEOUT = 10.0
#: The share of the timeout the mart read may take; the publish keeps the rest.
MART_READ_SHARE = 0.5
#: The library is told to give up this much before the thread is abandoned, so that
#: a publish that fails in time says why rather than "no answer".
_LIBRARY_MARGIN = 0.1
_ERROR_WIDTH = 300
COUNT_FIELDS = ("players_processed", "players_ready", "players_failed")
_PACIFIC = ZoneInfo("America/Los_Angeles")


@dataclass(frozen=True)
class AnnounceResult:
    """What one announcement did. ``error`` is one line (set when not ``ok``)."""

    ok: bool
    game_date: str | None
    topic: str
    #: Where it went: ``emulator HOST:PORT`` or ``pubsub.googleapis.com``.
    host: str
    timeout: float
    duration_ms: int
    message_id: str | None = None
    error: str | None = None
    #: The message body as published (or as it would have been).
    message: dict[str, Any] | None = None
    #: Where the counts came from: ``given``, ``readiness`` (the mart), ``mixed``
    #: (some given, the rest from the mart) or ``none`` (left out).
    counts_source: str = "none"
    #: Why the mart gave no counts, when it was asked and did not.
    counts_error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "game_date": self.game_date, "topic": self.topic,
            "host": self.host, "timeout": self.timeout, "duration_ms": self.duration_ms,
            "message_id": self.message_id, "error": self.error, "message": self.message,
            "counts_source": self.counts_source, "counts_error": self.counts_error,
        }  # fmt: skip


def pubsub_host() -> str:
    """Where the Pub/Sub client will connect (the library reads PUBSUB_EMULATOR_HOST)."""
    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    return f"emulator {emulator}" if emulator else "pubsub.googleapis.com"


def settings_problems(settings: Settings) -> list[str]:
    """What stops an announcement with these settings, one message each: the project is
    required; a keyfile must load. (The dispatcher's transport and warehouse pairing do
    not matter here: Phase 4 publishes, it does not dispatch.)"""
    from .config import ConfigError

    problems = []
    if not settings.gcp_project:
        problems.append(
            f"DISPATCHER_GCP_PROJECT is required to announce: the Pub/Sub project of {PHASE4_TOPIC}"
        )
    if settings.bigquery_keyfile is not None:
        try:
            settings.credentials()
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def completion_message(
    game_date: dt.date,
    *,
    players_processed: int | None = None,
    players_ready: int | None = None,
    players_failed: int | None = None,
    run_id: str | None = None,
    timestamp: dt.datetime | None = None,
) -> dict[str, Any]:
    """The contract's completion message; counts that are None are left out."""
    moment = (timestamp or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    body: dict[str, Any] = {
        "event_type": EVENT_TYPE,
        "processor": PROCESSOR,
        "game_date": game_date.isoformat(),
        "players_processed": players_processed,
        "players_ready": players_ready,
        "players_failed": players_failed,
        "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run_id": run_id or uuid.uuid4().hex,
    }
    return {key: value for key, value in body.items() if value is not None}


def publish_phase4_completion(
    game_date: dt.date | str,
    *,
    project: str | None = None,
    players_processed: int | None = None,
    players_ready: int | None = None,
    players_failed: int | None = None,
    run_id: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    settings: Settings | None = None,
    topic: str = PHASE4_TOPIC,
    read_counts: bool = True,
    timestamp: dt.datetime | None = None,
) -> AnnounceResult:
    """Publish the Phase 4 completion event for ``game_date`` to ``topic``; never raises,
    never takes longer than ``timeout`` seconds in all (see the module's docstring).

    ``project`` defaults to the settings' ``DISPATCHER_GCP_PROJECT``; ``settings`` to
    ``Settings.from_env()``. Missing counts are read from the readiness mart unless
    ``read_counts`` is False."""
    started = time.monotonic()
    deadline = started + (timeout if _positive(timeout) else 0.0)
    state: dict[str, Any] = {"project": project, "host": pubsub_host()}
    try:
        result = _announce(
            game_date, state, deadline, project=project, settings=settings, topic=topic,
            counts=(players_processed, players_ready, players_failed), run_id=run_id,
            timeout=timeout, read_counts=read_counts, timestamp=timestamp, started=started,
        )  # fmt: skip
    except Exception as exc:  # the promise: whatever happened, a result
        result = _result(state, topic, timeout, started, game_date, error=_one_line(exc))
    _log(result)
    return result


def _announce(
    game_date: dt.date | str,
    state: dict[str, Any],
    deadline: float,
    *,
    project: str | None,
    settings: Settings | None,
    topic: str,
    counts: tuple[int | None, int | None, int | None],
    run_id: str | None,
    timeout: float,
    read_counts: bool,
    timestamp: dt.datetime | None,
    started: float,
) -> AnnounceResult:
    from .config import Settings
    from .events import InvalidInput, parse_game_date, parse_phase4_event

    def failed(error: str, **extra: Any) -> AnnounceResult:
        return _result(state, topic, timeout, started, game_date, error=error, **extra)

    if not _positive(timeout):
        return failed(f"timeout must be a positive number of seconds, got {timeout!r}")
    today = dt.datetime.now(_PACIFIC).date()
    try:
        date = parse_game_date(game_date, today=today)
    except InvalidInput as exc:
        return failed(str(exc))
    state["game_date"] = date.isoformat()
    for name, value in zip(COUNT_FIELDS, counts, strict=True):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            return failed(f"{name} must be a non-negative integer, got {value!r}")
    if run_id is not None and not isinstance(run_id, str):
        return failed(f"run_id must be a string, got {type(run_id).__name__}")
    if settings is None:
        settings = Settings.from_env()  # a ConfigError is caught by the caller
    project = project or settings.gcp_project
    state["project"] = project
    if not project:
        return failed(f"no project for {PHASE4_TOPIC}: set DISPATCHER_GCP_PROJECT or pass project=")
    path = f"projects/{project}/topics/{topic}"
    state["path"] = path

    # The mart read (bounded, in its own thread) overlaps the ~0.9 s import.
    mart: _Background | None = None
    if read_counts and any(value is None for value in counts):
        budget = max((deadline - time.monotonic()) * MART_READ_SHARE, 0.0)
        mart = _Background(lambda: _read_counts(settings, date, budget), "announce-mart-read")
    from google.cloud import pubsub_v1

    credentials = settings.pubsub_credentials()
    values = list(counts)
    source = "given" if all(value is not None for value in counts) else "none"
    counts_error = None
    if mart is not None:
        mart_deadline = started + (deadline - started) * MART_READ_SHARE
        mart.join(max(mart_deadline - time.monotonic(), 0.0))
        if mart.alive:
            counts_error = "the readiness mart did not answer in time"
        elif mart.error is not None:
            counts_error = _one_line(mart.error)
        elif mart.value is None:
            counts_error = f"the readiness mart has no row for {date}"
        else:
            read = mart.value
            given = any(value is not None for value in counts)
            values = [
                v if v is not None else read[n] for n, v in zip(COUNT_FIELDS, values, strict=True)
            ]
            source = "mixed" if given else "readiness"
        if counts_error is not None and any(value is not None for value in counts):
            source = "given"
    body = completion_message(
        date, players_processed=values[0], players_ready=values[1],
        players_failed=values[2], run_id=run_id, timestamp=timestamp,
    )  # fmt: skip
    data = json.dumps(body, separators=(",", ":")).encode()
    parse_phase4_event(data, today=today)  # the dispatcher must accept what we send
    extra = {"message": body, "counts_source": source, "counts_error": counts_error}

    remaining = deadline - time.monotonic()
    if remaining <= _LIBRARY_MARGIN:
        return failed(_not_published(path, state, timeout, "no time left to publish"), **extra)
    rpc = remaining - _LIBRARY_MARGIN
    attributes = {"game_date": date.isoformat(), "event_type": EVENT_TYPE}
    publish = _Background(
        lambda: _publish(pubsub_v1, credentials, path, data, attributes, rpc), "announce-publish"
    )
    publish.join(max(deadline - time.monotonic(), 0.0))
    if publish.alive:
        reason = f"no answer within {timeout:g} s (outcome unknown)"
        return failed(_not_published(path, state, timeout, reason), **extra)
    if publish.error is not None:
        return failed(_not_published(path, state, timeout, _one_line(publish.error)), **extra)
    if not publish.value:
        return failed(_not_published(path, state, timeout, "no message id returned"), **extra)
    return _result(state, topic, timeout, started, game_date, message_id=str(publish.value),
                   **extra)  # fmt: skip


def _publish(
    pubsub_v1: Any, credentials: Any, path: str, data: bytes, attributes: dict[str, str],
    rpc: float,
) -> str:  # fmt: skip
    """In the publish thread: a client bounded in every call, one message, its id."""
    from .transport_pubsub import bounded_retry

    retry = bounded_retry(rpc)
    publisher = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1, max_latency=0.001),
        publisher_options=pubsub_v1.types.PublisherOptions(retry=retry, timeout=rpc),
        **({} if credentials is None else {"credentials": credentials}),
    )
    try:
        future = publisher.publish(path, data, retry=retry, timeout=rpc, **attributes)
        try:
            return future.result(timeout=rpc)
        except TimeoutError:
            raise TimeoutError(f"no acknowledgement in {rpc:.1f} s (outcome unknown)") from None
    finally:
        try:
            publisher.stop()
        except Exception:  # already stopped, or its channel gone
            pass


def _read_counts(settings: Settings, date: dt.date, budget: float) -> dict[str, int] | None:
    """The mart's counts for the date (see the module's docstring), None without a row."""
    from . import marts
    from .warehouse import connect

    warehouse = connect(settings.with_(query_timeout_seconds=max(budget, 0.1)))
    try:
        row = marts.readiness(warehouse, date)
    finally:
        warehouse.close()
    if row is None:
        return None
    in_store = int(row["players_in_feature_store"] or 0)
    ready = int(row["players_ready"] or 0)
    return {
        "players_processed": in_store,
        "players_ready": ready,
        "players_failed": max(in_store - ready, 0),
    }


class _Background:
    """A call in a daemon thread: joined with a timeout, abandoned if still running."""

    def __init__(self, call: Any, name: str) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self._call = call
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.value = self._call()
        except BaseException as exc:  # reported by the caller, never raised in a thread
            self.error = exc

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def _not_published(path: str, state: dict[str, Any], timeout: float, reason: str) -> str:
    return f"not published to {path} via {state['host']} within {timeout:g} s: {reason}"


def _result(
    state: dict[str, Any], topic: str, timeout: float, started: float,
    game_date: dt.date | str, **fields: Any,
) -> AnnounceResult:  # fmt: skip
    date = state.get("game_date")
    if date is None:
        date = game_date.isoformat() if isinstance(game_date, dt.date) else str(game_date)[:40]
    project = state.get("project")
    path = state.get("path") or (f"projects/{project}/topics/{topic}" if project else topic)
    error = fields.pop("error", None)
    return AnnounceResult(
        ok=error is None,
        game_date=date,
        topic=path,
        host=state["host"],
        timeout=float(timeout) if _positive(timeout) else 0.0,
        duration_ms=int((time.monotonic() - started) * 1000),
        error=error,
        **fields,
    )


def _log(result: AnnounceResult) -> None:
    try:
        fields: dict[str, Any] = {
            "game_date": result.game_date, "topic": result.topic, "host": result.host,
            "duration_ms": result.duration_ms, "counts_source": result.counts_source,
            "counts_error": result.counts_error,
        }  # fmt: skip
        if result.ok:
            logs.log("INFO", "phase 4 completion published", message_id=result.message_id,
                     **fields)  # fmt: skip
        else:
            logs.log("ERROR", "phase 4 completion not published", error=result.error,
                     timeout=result.timeout, **fields)  # fmt: skip
    except Exception:  # a broken stderr must not break the promise
        pass


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value > 0
        and value != float("inf")
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= _ERROR_WIDTH else line[: _ERROR_WIDTH - 3] + "..."
