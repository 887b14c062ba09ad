"""The baselines of rows 1 and 3: the same prediction requests a dispatch publishes, sent
by a bare PublisherClient, one at a time (the old coordinator) or batched (raw)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import (
    FUTURE_TIMEOUT,
    PROJECT,
    RAW_BATCH_MAX_LATENCY,
    RAW_BATCH_MAX_MESSAGES,
    REQUEST_TOPIC,
)
from .infra import BenchError, warehouse_copy
from .warehouses import settings_for


def pending_messages(
    template: Path, workdir: Path, dates: Sequence[dt.date], expected: int
) -> list[Any]:
    """The prediction requests a dispatch of the template would publish for every pending
    player of the dates (same bodies and attributes; batch_id / requested_at differ):
    the rows of `marts.pending`, each with its `next_request_id`."""
    from dispatcher import marts
    from dispatcher.dispatch import request_message
    from dispatcher.warehouse import connect

    with warehouse_copy(template, workdir, "messages") as path:
        wh = connect(settings_for(path))
        try:
            rows = [row for day in dates for row in marts.pending(wh, day)]
        finally:
            wh.close()
    requested_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    messages = [
        request_message(
            {**row, "request_id": row["next_request_id"]}, "baseline", "baseline", requested_at
        )
        for row in rows
    ]
    if len(messages) != expected:
        raise BenchError(f"expected {expected} pending messages, got {len(messages)}")
    return messages


def publish_one_at_a_time(messages: Sequence[Any]) -> None:
    """The old coordinator: default PublisherClient, wait on every future before the next."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    path = publisher.topic_path(PROJECT, REQUEST_TOPIC)
    try:
        for message in messages:
            publisher.publish(path, message.data, **message.attributes).result(
                timeout=FUTURE_TIMEOUT
            )
    finally:
        publisher.stop()
        publisher.transport.close()


def publish_batched(messages: Sequence[Any]) -> None:
    """Raw batched publishing: every message submitted, futures gathered at the end."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(
            max_messages=RAW_BATCH_MAX_MESSAGES, max_latency=RAW_BATCH_MAX_LATENCY
        )
    )
    path = publisher.topic_path(PROJECT, REQUEST_TOPIC)
    try:
        futures = [
            publisher.publish(path, message.data, **message.attributes) for message in messages
        ]
        for future in futures:
            future.result(timeout=FUTURE_TIMEOUT)
    finally:
        publisher.stop()
        publisher.transport.close()
