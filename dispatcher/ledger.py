"""The request ledger: claim -> publish -> confirm, with leases.

A claim inserts one ledger row per pending player atomically with respect to every
other claim on the same date, so a claim that loses a race sees the winner's rows
as in flight and claims nothing twice:

- DuckDB: a transaction that also updates the date's row in ``dispatch_locks``;
  concurrent transactions (threads) conflict on that row and retry, and the file
  admits one writing process at a time.
- BigQuery: one MERGE into the ledger. MERGE with an UPDATE clause is mutating DML,
  which BigQuery serialises per table partition and aborts on a concurrent update
  (retried here). A multi-statement transaction would serve too, but the BigQuery
  API emulator the tests run on ignores query parameters inside scripts.

A claim is confirmed (published_at, message_id) only after the transport
acknowledged it; a failed publish releases its claim at once; a crash leaves a claim
whose lease expires, after which the player is pending again (next attempt).
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Sequence
from typing import Any

from .warehouse import TransactionConflict, Warehouse

LEDGER = "nba_orchestration.request_ledger"
LOCKS = "nba_orchestration.dispatch_locks"
PENDING = "nba_orchestration.fct_pending_players"

#: States a claim takes: pending always; predicted too with --force.
CLAIMABLE = ("pending",)
FORCE_CLAIMABLE = ("pending", "predicted")


class ClaimContention(RuntimeError):
    """Other dispatchers kept winning the claim transaction for this date."""


def request_id(game_date: dt.date, player_lookup: str, attempt: int) -> str:
    """Deterministic for (game_date, player, attempt): consumers drop duplicates by it."""
    return f"{game_date.isoformat()}/{player_lookup}/{attempt}"


def utc_now() -> dt.datetime:
    """Naive UTC, as the warehouses store timestamps."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


# Claims cover the dates from @game_date through @through (one date, or a backfill range).
# DuckDB only (BigQuery claims with one MERGE): a lock row for every date of the range.
_ENSURE_LOCK_ROWS = f"""
insert into {LOCKS} (game_date, holder_batch_id, locked_at)
select game_date, cast(null as string), cast(null as timestamp)
from (select unnest(@dates) as game_date) as dates
where game_date not in (
    select game_date from {LOCKS} where game_date between @game_date and @through
)
"""

_TAKE_LOCK = f"""
update {LOCKS}
set holder_batch_id = @batch_id, locked_at = @claimed_at
where game_date between @game_date and @through
"""

# DuckDB: the claimed players are selected once, inside the claim transaction, into a
# connection-local table that both the ledger insert and the caller read.
_SELECT_CLAIMS = f"""
create or replace temp table dispatch_claims as
select
    concat(
        cast(game_date as string), '/', player_lookup, '/',
        cast(request_attempts + 1 as string)
    ) as request_id,
    request_attempts + 1 as attempt,
    cast(@claimed_at as timestamp) as claimed_at,
    game_date,
    player_lookup,
    game_id,
    team_abbr,
    opponent_team_abbr,
    is_home,
    current_points_line
from {PENDING}
where game_date between @game_date and @through and state in (select * from unnest(@states))
"""

_INSERT_CLAIMS = f"""
insert into {LEDGER} (
    request_id, game_date, player_lookup, game_id, attempt,
    batch_id, trigger_source, claimed_at, published_at, message_id
)
select
    request_id, game_date, player_lookup, game_id, attempt,
    @batch_id, @trigger_source, claimed_at, cast(null as timestamp), cast(null as string)
from dispatch_claims
"""

_CLAIMS_SELECTED = """
select * from dispatch_claims order by game_date, player_lookup
"""

_CLAIMED = f"""
select
    ledger.request_id,
    ledger.attempt,
    ledger.claimed_at,
    players.game_date,
    players.player_lookup,
    players.game_id,
    players.team_abbr,
    players.opponent_team_abbr,
    players.is_home,
    players.current_points_line
from {LEDGER} as ledger
inner join {PENDING} as players
    on ledger.game_date = players.game_date and ledger.player_lookup = players.player_lookup
where
    ledger.game_date between @game_date and @through
    and players.game_date between @game_date and @through
    and ledger.batch_id = @batch_id
order by ledger.game_date, ledger.player_lookup
"""

_CLAIM_MERGE = f"""
merge into {LEDGER} as ledger
using (
    select
        concat(
            cast(game_date as string), '/', player_lookup, '/',
            cast(request_attempts + 1 as string)
        ) as request_id,
        game_date,
        player_lookup,
        game_id,
        request_attempts + 1 as attempt
    from {PENDING}
    where game_date between @game_date and @through and state in (select * from unnest(@states))
) as claims
on ledger.game_date between @game_date and @through and ledger.request_id = claims.request_id
when matched then update set claimed_at = ledger.claimed_at
when not matched then insert (
    request_id, game_date, player_lookup, game_id, attempt,
    batch_id, trigger_source, claimed_at, published_at, message_id
) values (
    claims.request_id, claims.game_date, claims.player_lookup, claims.game_id,
    claims.attempt, @batch_id, @trigger_source, @claimed_at,
    cast(null as timestamp), cast(null as string)
)
"""

_CONFIRM = {
    "duckdb": f"""
update {LEDGER} as ledger
set published_at = @published_at, message_id = acked.message_id
from (
    select unnest(@request_ids) as request_id, unnest(@message_ids) as message_id
) as acked
where ledger.game_date between @game_date and @through and ledger.request_id = acked.request_id
""",
    # The emulator binds array parameters in UPDATE ... FROM wrongly; MERGE works on both.
    "bigquery": f"""
merge into {LEDGER} as ledger
using (
    select request_id, message_id
    from unnest(@request_ids) as request_id with offset as request_position
    inner join unnest(@message_ids) as message_id with offset as message_position
        on request_position = message_position
) as acked
on ledger.game_date between @game_date and @through and ledger.request_id = acked.request_id
when matched then update set published_at = @published_at, message_id = acked.message_id
""",
}

_RELEASE = f"""
delete from {LEDGER}
where
    game_date between @game_date and @through
    and batch_id = @batch_id
    and published_at is null
"""


def claim(
    warehouse: Warehouse,
    game_date: dt.date,
    *,
    batch_id: str,
    trigger_source: str,
    force: bool = False,
    now: dt.datetime | None = None,
    through: dt.date | None = None,
    max_attempts: int = 20,
) -> list[dict[str, Any]]:
    """Claim every claimable player of the date (through `through`) for this batch;
    the claimed rows, ordered by date and player."""
    dates = {"game_date": game_date, "through": through or game_date}
    params = {
        **dates,
        "batch_id": batch_id,
        "trigger_source": trigger_source,
        "claimed_at": now or utc_now(),
        "states": list(FORCE_CLAIMABLE if force else CLAIMABLE),
    }
    if warehouse.kind == "duckdb":
        days = (params["through"] - game_date).days + 1
        warehouse.execute(
            _ENSURE_LOCK_ROWS,
            {**dates, "dates": [game_date + dt.timedelta(days=i) for i in range(days)]},
        )
    delay = 0.05
    for attempt in range(1, max_attempts + 1):
        try:
            return _claim_once(warehouse, params)
        except TransactionConflict:
            if attempt == max_attempts:
                raise ClaimContention(
                    f"claim for {game_date} lost {max_attempts} times to concurrent dispatchers"
                ) from None
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def _claim_once(warehouse: Warehouse, params: dict[str, Any]) -> list[dict[str, Any]]:
    if warehouse.kind == "duckdb":
        warehouse.transaction([_TAKE_LOCK, _SELECT_CLAIMS, _INSERT_CLAIMS], params)
        return warehouse.query(_CLAIMS_SELECTED)
    warehouse.conflicting(_CLAIM_MERGE, params)
    keys = ("game_date", "through", "batch_id")
    return warehouse.query(_CLAIMED, {key: params[key] for key in keys})


def confirm(
    warehouse: Warehouse,
    game_date: dt.date,
    acknowledged: Sequence[tuple[str, str]],
    *,
    published_at: dt.datetime | None = None,
    through: dt.date | None = None,
) -> None:
    """Record (request_id, message_id) pairs the transport acknowledged."""
    if not acknowledged:
        return
    warehouse.execute(
        _CONFIRM[warehouse.kind],
        {
            "game_date": game_date,
            "through": through or game_date,
            "published_at": published_at or utc_now(),
            "request_ids": [request for request, _ in acknowledged],
            "message_ids": [message for _, message in acknowledged],
        },
    )


def release(
    warehouse: Warehouse, game_date: dt.date, batch_id: str, *, through: dt.date | None = None
) -> None:
    """Drop this batch's unconfirmed claims so the players are pending again now."""
    warehouse.execute(
        _RELEASE, {"game_date": game_date, "through": through or game_date, "batch_id": batch_id}
    )


def requests(warehouse: Warehouse, game_date: dt.date) -> list[dict[str, Any]]:
    """Every ledger row of the date."""
    return warehouse.query(
        f"select * from {LEDGER} where game_date = @game_date order by request_id",
        {"game_date": game_date},
    )
