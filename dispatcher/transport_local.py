"""The embedded default transport: an outbox table in the warehouse's DuckDB file.

Publishing a batch is one INSERT statement (one transaction on the dispatcher's own
connection): either every valid message of the batch is written and acknowledged, or
none is and every one of them carries the error. The reference worker consumes the
table with :func:`pull_outbox` / :func:`ack_outbox`, standing in for a Pub/Sub
subscription.

Table (created by dbt, model ``request_outbox``)::

    nba_orchestration.request_outbox (
        message_id VARCHAR, topic VARCHAR, game_date DATE,
        data VARCHAR,          -- the JSON body, utf-8
        attributes VARCHAR,    -- the attributes as a JSON object
        published_at TIMESTAMP,  -- naive UTC
        acked_at TIMESTAMP       -- null until a worker acknowledges it
    )

The transport works on the DuckDB warehouse's own connection and parameter style;
a DuckDB connection must not be used from two threads at once: the caller owns it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .transport import OutgoingMessage, PublishResult

if TYPE_CHECKING:
    from .warehouse_duckdb import DuckDBWarehouse

OUTBOX_TABLE = "nba_orchestration.request_outbox"

_INSERT = f"""
insert into {OUTBOX_TABLE}
    (message_id, topic, game_date, data, attributes, published_at, acked_at)
select
    unnest(@message_ids::varchar[]),
    @topic,
    unnest(@game_dates::date[]),
    unnest(@bodies::varchar[]),
    unnest(@attributes::varchar[]),
    @published_at,
    null
"""

# Oldest first; rowid keeps a batch (one published_at) in publish order.
_PULL = f"""
select message_id, topic, game_date, data, attributes, published_at
from {OUTBOX_TABLE}
where topic = @topic and acked_at is null
order by published_at, rowid
limit @max_messages
"""

_ACK = f"""
update {OUTBOX_TABLE}
set acked_at = @acked_at
where message_id in (select unnest(@message_ids::varchar[])) and acked_at is null
"""


def _utc_now() -> dt.datetime:
    """Naive UTC, the warehouse's timestamp convention."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class LocalOutboxTransport:
    """Transport into the outbox of an open DuckDB warehouse."""

    kind = "local"

    def __init__(self, warehouse: DuckDBWarehouse) -> None:
        self.warehouse = warehouse

    def publish(
        self, topic: str, messages: Sequence[OutgoingMessage], *, timeout: float = 10.0
    ) -> list[PublishResult]:
        """Write the batch in one statement; one result per message, in order.

        ``timeout`` is accepted for the Transport protocol; a local insert does not
        wait on the network. A message whose game_date attribute is missing or not a
        date, or whose body is not utf-8, fails alone; the rest of the batch is written.
        """
        del timeout
        results: list[PublishResult | None] = [None] * len(messages)
        rows: list[tuple[int, str, dt.date, str, str]] = []
        for index, message in enumerate(messages):
            try:
                rows.append((index, uuid.uuid4().hex, *_row_values(message)))
            except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
                results[index] = PublishResult(message.request_id, error=_error(exc))

        if rows:
            try:
                self.warehouse.execute(
                    _INSERT,
                    {
                        "message_ids": [row[1] for row in rows],
                        "topic": topic,
                        "game_dates": [row[2] for row in rows],
                        "bodies": [row[3] for row in rows],
                        "attributes": [row[4] for row in rows],
                        "published_at": _utc_now(),
                    },
                )
            except Exception as exc:  # duckdb raises many types; each message gets it
                error = f"outbox insert failed: {_error(exc)}"
                for index, *_ in rows:
                    results[index] = PublishResult(messages[index].request_id, error=error)
            else:
                for index, message_id, *_ in rows:
                    results[index] = PublishResult(
                        messages[index].request_id, message_id=message_id
                    )
        return [result for result in results if result is not None]

    def close(self) -> None:
        """The connection belongs to the warehouse: nothing to release here."""


def _row_values(message: OutgoingMessage) -> tuple[dt.date, str, str]:
    attributes = message.attributes
    raw_date = attributes.get("game_date") if isinstance(attributes, dict) else None
    if raw_date is None:
        raise KeyError("attribute game_date is missing")
    game_date = dt.date.fromisoformat(str(raw_date))
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()):
        raise TypeError("attribute keys and values must be strings")
    body = bytes(message.data).decode("utf-8")
    return game_date, body, json.dumps(attributes, sort_keys=True, ensure_ascii=False)


def pull_outbox(
    warehouse: DuckDBWarehouse, topic: str, max_messages: int
) -> list[dict[str, Any]]:
    """Unacknowledged messages of ``topic``, oldest first, at most ``max_messages``.

    Each dict has message_id, topic, game_date (date), data (the JSON body, str),
    attributes (dict) and published_at (naive UTC). Pulling does not lease: two
    workers pulling at once see the same rows (request_id lets them drop duplicates).
    """
    if max_messages <= 0:
        return []
    rows = warehouse.query(_PULL, {"topic": topic, "max_messages": int(max_messages)})
    for row in rows:
        row["attributes"] = json.loads(row["attributes"]) if row["attributes"] else {}
    return rows


def ack_outbox(warehouse: DuckDBWarehouse, message_ids: Iterable[str]) -> int:
    """Mark messages acknowledged (acked_at = now, UTC); returns how many were newly acked."""
    ids = list(dict.fromkeys(message_ids))
    if not ids:
        return 0
    rows = warehouse.query(_ACK, {"message_ids": ids, "acked_at": _utc_now()})
    return int(next(iter(rows[0].values()))) if rows else 0
