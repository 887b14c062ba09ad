"""The warehouse the marts live in: DuckDB (embedded default) or BigQuery.

One typed interface, :class:`Warehouse`, and one module per warehouse that owns its
dialect (``warehouse_duckdb``, ``warehouse_bigquery``): callers ask it to read, to
claim, confirm or release requests in the ledger, and to upsert predictions; they
never branch on which warehouse it is. Queries are written in one parameter style,
BigQuery's named parameters (``@game_date``), and always bound, never formatted.
Tables are named ``dataset.table``; BigQuery resolves them in the client's project,
DuckDB as ``schema.table``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from .config import LOCAL_OUTBOX_NEEDS_DUCKDB, ConfigError, Settings

if TYPE_CHECKING:
    from .warehouse_duckdb import DuckDBWarehouse

LEDGER = "nba_orchestration.request_ledger"
PENDING = "nba_orchestration.fct_pending_players"
DISPATCH_STATE = "nba_orchestration.fct_player_dispatch_state"
READINESS = "nba_orchestration.fct_phase4_readiness"
PREDICTIONS = "nba_predictions.player_prop_predictions"

# The SQL both warehouses speak alike.
#: A trigger refuses a critical date inside the claim itself (no readiness read first).
UNLESS_CRITICAL = f"""
and game_date in (
    select game_date from {READINESS}
    where game_date between @first and @last and not is_critical
)
"""

RELEASE = f"""
delete from {LEDGER}
where game_date between @first and @last and batch_id = @batch_id and published_at is null
"""

#: The columns a claim returns per claimed request: what a prediction request carries.
CLAIM_COLUMNS = (
    "request_id", "attempt", "game_date", "player_lookup", "game_id", "request_fields",
)  # fmt: skip


class WarehouseError(RuntimeError):
    """The warehouse could not run a query."""


class TransactionConflict(WarehouseError):
    """A concurrent transaction changed the same rows; retrying may succeed."""


class Warehouse(Protocol):
    """What the dispatcher and the reference worker ask of a warehouse.

    ``first``/``last`` bound the game dates a ledger operation touches (one date, or a
    backfill range): every statement filters ``game_date`` on them.
    """

    kind: str
    #: Statements sent so far (round trips): the run's stages report them.
    statements: int

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read query; rows as dicts of plain Python values."""
        ...

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement."""
        ...

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
        """Insert one ledger row per pending player of the dates (with ``force``: also
        the predicted players not requested inside the lease, column
        ``can_force_request``), atomically against every other claim on them; the claimed
        requests (:data:`CLAIM_COLUMNS`) ordered by date and player. With
        ``unless_critical``, a date whose Phase 4 readiness is critical (or that has no
        slate) claims nothing. TransactionConflict when a concurrent claim won."""
        ...

    def confirm(
        self,
        first: dt.date,
        last: dt.date,
        *,
        batch_id: str,
        acknowledged: Sequence[tuple[str, str]],
        published_at: dt.datetime,
    ) -> None:
        """Record the (request_id, message_id) pairs the transport acknowledged and
        release the batch's other claims, in one atomic step."""
        ...

    def release(self, first: dt.date, last: dt.date, *, batch_id: str) -> None:
        """Drop the batch's unconfirmed claims so that the players are pending again."""
        ...

    def upsert_predictions(
        self, rows: Sequence[Mapping[str, Any]], *, created_at: dt.datetime
    ) -> None:
        """Write prediction rows keyed on (game_date, player_lookup, system_id), every one
        active and created at ``created_at``, never a second row for a key."""
        ...

    def outbox(self) -> DuckDBWarehouse:
        """The DuckDB file that holds the local transport's outbox."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


def connect(settings: Settings) -> Warehouse:
    """The settings' warehouse, open."""
    if settings.warehouse == "duckdb":
        from .warehouse_duckdb import DuckDBWarehouse

        if not settings.duckdb_path.exists():
            raise WarehouseError(
                f"no DuckDB warehouse at {settings.duckdb_path}: run `dbt build` there first"
                " (or `dispatcher demo`), or set DISPATCHER_DUCKDB_PATH"
            )
        return DuckDBWarehouse(settings.duckdb_path)
    from .warehouse_bigquery import BigQueryWarehouse

    return BigQueryWarehouse(
        project=settings.gcp_project or "",
        api_endpoint=settings.bigquery_api_endpoint,
        location=settings.bigquery_location,
        timeout=settings.query_timeout_seconds,
        credentials=settings.bigquery_credentials(),
    )


def no_local_outbox() -> ConfigError:
    return ConfigError(LOCAL_OUTBOX_NEEDS_DUCKDB)


def plain(value: Any) -> Any:
    """Warehouse values as plain Python: Decimal -> float, aware datetimes -> naive UTC."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def prediction_arrays(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Prediction rows as one array parameter per column (zipped back in SQL)."""
    return {
        "prediction_ids": [r["prediction_id"] for r in rows],
        "system_ids": [r["system_id"] for r in rows],
        "player_lookups": [r["player_lookup"] for r in rows],
        "game_ids": [r["game_id"] or "" for r in rows],
        "game_dates": [r["game_date"] for r in rows],
        "predicted_points": [float(r["predicted_points"]) for r in rows],
        "confidence_scores": [float(r["confidence_score"]) for r in rows],
        "recommendations": [r["recommendation"] for r in rows],
        "has_lines": [r["current_points_line"] is not None for r in rows],
        # BigQuery array parameters cannot hold NULL: has_lines says which are real.
        "points_lines": [float(r["current_points_line"] or 0.0) for r in rows],
    }


PREDICTION_COLUMNS = (
    "prediction_id, system_id, player_lookup, game_id, game_date, predicted_points,"
    " confidence_score, recommendation, current_points_line, is_active, created_at"
)
