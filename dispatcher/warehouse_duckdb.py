"""DuckDB, the embedded default warehouse: one file, shared with dbt-duckdb.

Why each ledger operation is atomic here:

- **claim**: one transaction that selects the claims from the pending mart and, when
  there are any, updates the dates' rows in ``dispatch_locks`` and inserts them. Two
  transactions claiming the same date both write the lock row, so DuckDB's optimistic
  concurrency aborts the later one at the conflict (``TransactionConflict``, retried by
  the caller; also when the winner committed after the loser's snapshot) and it
  re-reads the pending mart, where the winner's rows are now in flight. A claim that
  finds nothing writes nothing and conflicts with no one. Between
  processes the file itself serialises writers: it admits one process at a time
  (others wait for it, up to ``lock_timeout``).
- **confirm**: one transaction updating the acknowledged rows and deleting the batch's
  other unconfirmed claims.
- **release**: one DELETE of the batch's unconfirmed claims.
- **upsert_predictions**: one transaction deleting the rows of the incoming keys and
  inserting the new ones, so a key never holds two rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .warehouse import (
    CLAIM_COLUMNS,
    DISPATCH_STATE,
    LEDGER,
    PENDING,
    PREDICTION_COLUMNS,
    PREDICTIONS,
    RELEASE,
    UNLESS_CRITICAL,
    TransactionConflict,
    WarehouseError,
    plain,
    prediction_arrays,
)

LOCKS = "nba_orchestration.dispatch_locks"
_PARAM = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")

_ENSURE_LOCK_ROWS = f"""
insert into {LOCKS} (game_date, holder_batch_id, locked_at)
select game_date, cast(null as string), cast(null as timestamp)
from (select unnest(@dates) as game_date) as dates
where game_date not in (select game_date from {LOCKS} where game_date between @first and @last)
"""

_TAKE_LOCK = f"""
update {LOCKS}
set holder_batch_id = @batch_id, locked_at = @claimed_at
where game_date between @first and @last
"""

# The claimed requests are selected once, inside the transaction, into a
# connection-local table that both the ledger insert and the caller read.
_SELECT_CLAIMS = """
create or replace temp table dispatch_claims as
select
    next_request_id as request_id,
    next_attempt as attempt,
    game_date,
    player_lookup,
    game_id,
    request_fields
from {source}
where
    game_date between @first and @last
    {forced}
    {guard}
"""

_INSERT_CLAIMS = f"""
insert into {LEDGER} (
    request_id, game_date, player_lookup, game_id, attempt,
    batch_id, trigger_source, claimed_at, published_at, message_id
)
select
    request_id, game_date, player_lookup, game_id, attempt,
    @batch_id, @trigger_source, @claimed_at, cast(null as timestamp), cast(null as string)
from dispatch_claims
"""

_ANY_CLAIMS = "select count(*) > 0 from dispatch_claims"

_CLAIMED = f"""
select {", ".join(CLAIM_COLUMNS)}
from dispatch_claims
order by game_date, player_lookup
"""

_CONFIRM = f"""
update {LEDGER} as ledger
set published_at = @published_at, message_id = acked.message_id
from (
    select unnest(@request_ids) as request_id, unnest(@message_ids) as message_id
) as acked
where ledger.game_date between @first and @last and ledger.request_id = acked.request_id
"""

_DELETE_PREDICTIONS = f"""
delete from {PREDICTIONS} as predictions
using (
    select
        unnest(@game_dates::date[]) as game_date,
        unnest(@player_lookups::varchar[]) as player_lookup,
        unnest(@system_ids::varchar[]) as system_id
) as incoming
where
    predictions.game_date = incoming.game_date
    and predictions.player_lookup = incoming.player_lookup
    and predictions.system_id = incoming.system_id
"""

_INSERT_PREDICTIONS = f"""
insert into {PREDICTIONS} ({PREDICTION_COLUMNS})
select
    prediction_id, system_id, player_lookup, game_id, game_date,
    cast(predicted_points as decimal(10, 2)),
    cast(confidence_score as decimal(10, 2)),
    recommendation,
    case when has_line then cast(points_line as decimal(10, 2)) end,
    true,
    @created_at
from (
    select
        unnest(@prediction_ids::varchar[]) as prediction_id,
        unnest(@system_ids::varchar[]) as system_id,
        unnest(@player_lookups::varchar[]) as player_lookup,
        unnest(@game_ids::varchar[]) as game_id,
        unnest(@game_dates::date[]) as game_date,
        unnest(@predicted_points::double[]) as predicted_points,
        unnest(@confidence_scores::double[]) as confidence_score,
        unnest(@recommendations::varchar[]) as recommendation,
        unnest(@has_lines::boolean[]) as has_line,
        unnest(@points_lines::double[]) as points_line
)
"""


class _OpenFiles:
    """The database each file is open as in this process, shared by every warehouse on
    it: each warehouse is a connection (cursor) of that one database, which closes with
    the last of them. Threads that opened and closed a file on their own raced in
    DuckDB's instance cache ("Unique file handle conflict: ... already attached", seen
    under concurrent `serve` requests); opening and closing happen here, under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, tuple[Any, int]] = {}

    def connect(self, path: Path) -> Any:
        """A new connection to the file's database, or raises duckdb.IOException."""
        import duckdb

        key = str(path.resolve())
        with self._lock:
            database, users = self._open.get(key, (None, 0))
            if database is None:
                database = duckdb.connect(key)
            self._open[key] = (database, users + 1)
            return database.cursor()

    def close(self, path: Path, con: Any) -> None:
        key = str(path.resolve())
        with self._lock:
            con.close()
            database, users = self._open[key]
            if users > 1:
                self._open[key] = (database, users - 1)
            else:
                del self._open[key]
                database.close()  # the file's lock goes with it: other processes may open it


_files = _OpenFiles()


class DuckDBWarehouse:
    """One DuckDB file. The file admits one writing process at a time: opening it
    while another process holds it is retried until ``lock_timeout`` passes. Within
    a process, warehouses on the same file share its database (:class:`_OpenFiles`)."""

    kind = "duckdb"

    def __init__(self, path: Path | str, *, lock_timeout: float = 30.0) -> None:
        import duckdb

        self.path = Path(path)
        self.statements = 0
        deadline = time.monotonic() + lock_timeout
        delay = 0.05
        while True:
            try:
                self._con = _files.connect(self.path)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise WarehouseError(f"cannot open {self.path}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        self._closed = False
        self._con.execute("set TimeZone = 'UTC'")

    # -- statements ----------------------------------------------------------------------

    def _execute(self, sql: str, params: Mapping[str, Any] | None):
        import duckdb

        values = dict(params or {})
        used = {name: values[name] for name in dict.fromkeys(_PARAM.findall(sql))}
        self.statements += 1
        try:
            return self._con.execute(_PARAM.sub(r"$\1", sql), used)
        except duckdb.CatalogException as exc:
            raise WarehouseError(f"{exc} (has `dbt build` run on {self.path}?)") from exc

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        cursor = self._execute(sql, params)
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        # Only decimals and zoned timestamps need converting: skip the other columns.
        convert = [
            name
            for name, kind, *_ in cursor.description
            if str(kind).startswith(("DECIMAL", "TIMESTAMP WITH TIME ZONE"))
        ]
        for row in rows if convert else ():
            for name in convert:
                row[name] = plain(row[name])
        return rows

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._execute(sql, params)

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """One transaction around the block; TransactionConflict when a concurrent one won."""
        import duckdb

        self._con.begin()
        try:
            yield
            self._con.commit()
        except duckdb.TransactionException as exc:
            self._con.rollback()
            raise TransactionConflict(str(exc)) from exc
        except Exception:
            self._con.rollback()
            raise

    def _transaction(self, statements: Sequence[str], params: Mapping[str, Any]) -> None:
        """Run statements atomically; TransactionConflict when a concurrent one won."""
        with self._atomic():
            for statement in statements:
                self._execute(statement, params)

    # -- the ledger ----------------------------------------------------------------------

    def claim(
        self,
        first: dt.date,
        last: dt.date,
        *,
        batch_id: str,
        trigger_source: str,
        claimed_at: dt.datetime,
        force: bool = False,
        unless_critical: bool = False,
    ) -> list[dict[str, Any]]:
        dates = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
        self._execute(_ENSURE_LOCK_ROWS, {"first": first, "last": last, "dates": dates})
        select = _SELECT_CLAIMS.format(
            source=DISPATCH_STATE if force else PENDING,
            forced="and can_force_request" if force else "",
            guard=UNLESS_CRITICAL if unless_critical else "",
        )
        params = {
            "first": first,
            "last": last,
            "batch_id": batch_id,
            "trigger_source": trigger_source,
            "claimed_at": claimed_at,
        }
        # Select first, then take the lock only when there is something to claim: a claim
        # that finds nothing (a redelivered event, a retry with nothing pending) writes
        # nothing, so it never conflicts with a concurrent claim. One that finds rows
        # takes the lock after its read; DuckDB aborts it if a claim that committed since
        # its snapshot wrote the lock row, and the caller retries on the new state. (The
        # lock rows exist before the transaction begins, so that write always finds them.)
        with self._atomic():
            self._execute(select, params)
            if self._execute(_ANY_CLAIMS, {}).fetchone()[0]:
                self._execute(_TAKE_LOCK, params)
                self._execute(_INSERT_CLAIMS, params)
        return self.query(_CLAIMED)

    def confirm(
        self,
        first: dt.date,
        last: dt.date,
        *,
        batch_id: str,
        acknowledged: Sequence[tuple[str, str]],
        published_at: dt.datetime,
    ) -> None:
        params = {
            "first": first,
            "last": last,
            "batch_id": batch_id,
            "published_at": published_at,
            "request_ids": [request for request, _ in acknowledged],
            "message_ids": [message for _, message in acknowledged],
        }
        self._transaction([_CONFIRM, RELEASE] if acknowledged else [RELEASE], params)

    def release(self, first: dt.date, last: dt.date, *, batch_id: str) -> None:
        self._execute(RELEASE, {"first": first, "last": last, "batch_id": batch_id})

    # -- predictions (the reference worker) ----------------------------------------------

    def upsert_predictions(
        self, rows: Sequence[Mapping[str, Any]], *, created_at: dt.datetime
    ) -> None:
        self._transaction(
            [_DELETE_PREDICTIONS, _INSERT_PREDICTIONS],
            {**prediction_arrays(rows), "created_at": created_at},
        )

    def outbox(self) -> DuckDBWarehouse:
        return self

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _files.close(self.path, self._con)
