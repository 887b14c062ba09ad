"""The request ledger: claim -> publish -> confirm, with leases.

A claim inserts one ledger row per pending player, atomically with respect to every
other claim on the same dates, so a claim that loses a race sees the winner's rows
as in flight and claims nothing twice. A claim is confirmed (published_at,
message_id) only after the transport acknowledged it; the batch's other claims are
released at once; a crash leaves a claim whose lease expires, after which the
player is pending again (next attempt). How each warehouse makes these steps atomic
is said in its own module (``warehouse_duckdb``, ``warehouse_bigquery``); this module
holds the policy: retries on conflict, and the clock.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .warehouse import LEDGER, TransactionConflict, Warehouse

T = TypeVar("T")


class ClaimContention(RuntimeError):
    """Other dispatchers kept winning the claim transaction for these dates."""


def utc_now() -> dt.datetime:
    """Naive UTC, as the warehouses store timestamps."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def _retrying(call: Callable[[], T], what: str, max_attempts: int) -> T:
    delay = 0.05
    for attempt in range(1, max_attempts + 1):
        try:
            return call()
        except TransactionConflict:
            if attempt == max_attempts:
                raise ClaimContention(
                    f"{what} lost {max_attempts} times to concurrent dispatchers"
                ) from None
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def claim(
    warehouse: Warehouse,
    game_date: dt.date,
    *,
    batch_id: str,
    trigger_source: str,
    force: bool = False,
    unless_critical: bool = False,
    now: dt.datetime | None = None,
    through: dt.date | None = None,
    max_attempts: int = 20,
) -> list[dict[str, Any]]:
    """Claim every pending player of the date (through `through`) for this batch
    (with `force`, the predicted ones too); the claimed requests, ordered by date and
    player. With `unless_critical`, nothing is claimed on a date whose Phase 4
    readiness is critical."""
    last = through or game_date
    claimed_at = now or utc_now()
    return _retrying(
        lambda: warehouse.claim(
            game_date, last, batch_id=batch_id, trigger_source=trigger_source,
            claimed_at=claimed_at, force=force, unless_critical=unless_critical,
        ),  # fmt: skip
        f"claim for {game_date}",
        max_attempts,
    )


def confirm(
    warehouse: Warehouse,
    game_date: dt.date,
    acknowledged: Sequence[tuple[str, str]],
    *,
    batch_id: str,
    published_at: dt.datetime | None = None,
    through: dt.date | None = None,
    max_attempts: int = 20,
) -> None:
    """Record the (request_id, message_id) pairs the transport acknowledged; release
    the batch's other claims."""
    _retrying(
        lambda: warehouse.confirm(
            game_date, through or game_date, batch_id=batch_id,
            acknowledged=acknowledged, published_at=published_at or utc_now(),
        ),  # fmt: skip
        f"confirm for {game_date}",
        max_attempts,
    )


def release(
    warehouse: Warehouse, game_date: dt.date, batch_id: str, *, through: dt.date | None = None
) -> None:
    """Drop this batch's unconfirmed claims so the players are pending again now."""
    _retrying(
        lambda: warehouse.release(game_date, through or game_date, batch_id=batch_id),
        f"release for {game_date}",
        20,
    )


def requests(warehouse: Warehouse, game_date: dt.date) -> list[dict[str, Any]]:
    """Every ledger row of the date."""
    return warehouse.query(
        f"select * from {LEDGER} where game_date = @game_date order by request_id",
        {"game_date": game_date},
    )
