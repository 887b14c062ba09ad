"""The reference Phase 5 worker: pulls prediction requests from a source in batches,
predicts and writes each batch (:mod:`.predict`), and acknowledges it once written.

Production keeps its own Phase 5 workers; this one closes the loop on a laptop, in the
demo and in the test suite. Messages are acknowledged only after the write committed,
failed ones included (a redelivery would fail the same way). If the write itself keeps
failing, the batch is left unacknowledged (Pub/Sub: nacked) and :class:`WorkerError` is
raised; so is it, before any message is taken, when a system of the dbt var
required_systems has no implementation. The worker stops after ``max_messages``
requests, or once ``idle_exit_seconds`` pass without one, or once ``stop`` is set (the
batch in hand is written and acknowledged first); with none of them it runs until
interrupted. On DuckDB the file is released while the worker is idle, so a dispatcher
in another process can open it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..logs import log
from .predict import BatchResult, MissingSystem, process_batch, required_implementations
from .sources import LocalSource, PubSubSource, SourceError, Warehouses

DEFAULT_SUBSCRIPTION = "prediction-request-worker"

#: How long one empty poll waits before the loop looks at its stop conditions again.
POLL_SECONDS = 0.2


class WorkerError(RuntimeError):
    """The worker cannot go on (the subscription failed, writes keep failing, or a
    required system has no implementation)."""


@dataclass
class WorkerResult(BatchResult):
    """What a run of the worker came to: the batches' tallies, and how long it took."""

    duration_ms: int = 0


def run_worker(
    settings: Settings,
    *,
    source: str = "local",
    subscription: str = DEFAULT_SUBSCRIPTION,
    max_messages: int | None = None,
    idle_exit_seconds: float | None = None,
    batch_size: int = 100,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> WorkerResult:
    """Consume prediction requests until ``max_messages`` were processed or nothing
    arrived for ``idle_exit_seconds``; write their predictions; return the tally.

    ``source``: ``local`` (the outbox table in settings.duckdb_path) or ``pubsub``
    (``subscription`` in settings.gcp_project; a full ``projects/...`` path also
    works). ``progress(n)`` is called after each batch with its size. Once ``stop`` is
    set (e.g. by a signal handler) the worker takes no new batch and returns.
    """
    if source not in ("local", "pubsub"):
        raise ValueError(f"source must be 'local' or 'pubsub', got {source!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if source == "pubsub" and not settings.gcp_project:
        raise WorkerError("the pubsub source needs DISPATCHER_GCP_PROJECT")
    if max_messages is not None and max_messages < 0:
        raise ValueError("max_messages must not be negative")
    if idle_exit_seconds is not None and idle_exit_seconds < 0:
        raise ValueError("idle_exit_seconds must not be negative")
    try:
        required_implementations()  # before any message is taken
    except MissingSystem as exc:
        raise WorkerError(str(exc)) from exc

    t0 = time.perf_counter()
    result = WorkerResult()
    handles = Warehouses(settings)
    log("INFO", "worker started", source=source, batch_size=batch_size,
        max_messages=max_messages, idle_exit_seconds=idle_exit_seconds)  # fmt: skip
    try:
        if source == "local":
            feed: LocalSource | PubSubSource = LocalSource(handles)
        else:
            feed = PubSubSource(
                settings.gcp_project or "", subscription, batch_size,
                credentials=settings.pubsub_credentials(),
            )  # fmt: skip
        try:
            _loop(feed, handles, result, max_messages, idle_exit_seconds, batch_size, progress,
                  stop)  # fmt: skip
        except SourceError as exc:
            raise WorkerError(str(exc)) from exc
        finally:
            feed.close()
    finally:
        handles.close()
        result.duration_ms = int((time.perf_counter() - t0) * 1000)
        tally: dict[str, Any] = result.as_json()
        stopped = True if stop is not None and stop.is_set() else None
        log("INFO", "worker finished", **tally, stopped=stopped)
    return result


def _loop(
    feed: LocalSource | PubSubSource,
    handles: Warehouses,
    result: WorkerResult,
    max_messages: int | None,
    idle_exit_seconds: float | None,
    batch_size: int,
    progress: Callable[[int], None] | None,
    stop: threading.Event | None = None,
) -> None:
    last_message = time.monotonic()
    while max_messages is None or result.received < max_messages:
        if stop is not None and stop.is_set():
            return
        want = (
            batch_size if max_messages is None else min(batch_size, max_messages - result.received)
        )
        wait = POLL_SECONDS
        if idle_exit_seconds is not None:
            idle_left = idle_exit_seconds - (time.monotonic() - last_message)
            if idle_left <= 0:
                return
            wait = min(wait, idle_left)
        batch = feed.pull(want, wait)
        if not batch:
            handles.release_idle()
            continue
        try:
            tally = process_batch(handles.warehouse(), batch)
        except BaseException as exc:  # interrupted too: hand the batch back at once
            feed.nack(batch)
            if not isinstance(exc, Exception):
                raise
            raise WorkerError(
                f"a batch of {len(batch)} requests failed: {type(exc).__name__}: {exc}"
            ) from exc
        feed.ack(batch)
        result.received += tally.received
        result.written_players += tally.written_players
        result.duplicates += tally.duplicates
        result.failed += tally.failed
        if progress is not None:
            progress(len(batch))
        last_message = time.monotonic()
