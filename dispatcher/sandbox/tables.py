"""The upstream tables a sample slate fills (the NBA schedule, Phase 3 context, Phase 4
features, Phase 5 predictions, the request ledger): where each lives, its columns and
their types."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "SCHEDULE",
    "CONTEXT",
    "FEATURES",
    "LEDGER",
    "LEDGER_COLUMNS",
    "PREDICTIONS",
    "TABLES",
    "LedgerTableMissing",
    "Table",
]


@dataclass(frozen=True)
class Table:
    """One upstream table: where it lives and its columns as (name, DuckDB, BigQuery) types."""

    key: str
    schema: str
    name: str
    columns: tuple[tuple[str, str, str], ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column for column, _, _ in self.columns)

    def duckdb_ddl(self) -> str:
        body = ",\n    ".join(f"{column} {duck}" for column, duck, _ in self.columns)
        return f"create table if not exists {self.schema}.{self.name} (\n    {body}\n)"

    def bigquery_ddl(self, project: str) -> str:
        body = ",\n    ".join(f"{column} {bq}" for column, _, bq in self.columns)
        return (
            f"create table if not exists `{project}.{self.schema}.{self.name}` (\n    {body}\n)\n"
            "partition by game_date"
        )


NUMERIC = ("DECIMAL(10, 2)", "NUMERIC")
TIMESTAMP = ("TIMESTAMP", "TIMESTAMP")
STRING = ("VARCHAR", "STRING")
DATE = ("DATE", "DATE")
BOOL = ("BOOLEAN", "BOOL")
INT64 = ("BIGINT", "INT64")

SCHEDULE = Table(
    "schedule",
    "nba_raw",
    "nbac_schedule",
    (
        ("game_id", *STRING),
        ("game_date", *DATE),
        ("home_team_tricode", *STRING),
        ("away_team_tricode", *STRING),
        ("game_status", *INT64),
    ),
)
CONTEXT = Table(
    "context",
    "nba_analytics",
    "upcoming_player_game_context",
    (
        ("player_lookup", *STRING),
        ("game_id", *STRING),
        ("game_date", *DATE),
        ("team_abbr", *STRING),
        ("opponent_team_abbr", *STRING),
        ("home_game", *BOOL),
        ("current_points_line", *NUMERIC),
        ("avg_minutes_per_game_last_7", *NUMERIC),
        ("player_status", *STRING),
        ("processed_at", *TIMESTAMP),
    ),
)
FEATURES = Table(
    "features",
    "nba_predictions",
    "ml_feature_store_v2",
    (
        ("player_lookup", *STRING),
        ("game_id", *STRING),
        ("game_date", *DATE),
        ("features", "DOUBLE[]", "ARRAY<FLOAT64>"),
        ("feature_names", "VARCHAR[]", "ARRAY<STRING>"),
        ("feature_count", *INT64),
        ("feature_version", *STRING),
        ("feature_quality_score", *NUMERIC),
        ("is_production_ready", *BOOL),
        ("created_at", *TIMESTAMP),
        ("updated_at", *TIMESTAMP),
    ),
)
PREDICTIONS = Table(
    "predictions",
    "nba_predictions",
    "player_prop_predictions",
    (
        ("prediction_id", *STRING),
        ("system_id", *STRING),
        ("player_lookup", *STRING),
        ("game_id", *STRING),
        ("game_date", *DATE),
        ("predicted_points", *NUMERIC),
        ("confidence_score", *NUMERIC),
        ("recommendation", *STRING),
        ("current_points_line", *NUMERIC),
        ("is_active", *BOOL),
        ("created_at", *TIMESTAMP),
    ),
)
# Created by dbt (models/orchestration/request_ledger.sql); the slate only inserts into it.
LEDGER = Table(
    "ledger",
    "nba_orchestration",
    "request_ledger",
    (
        ("request_id", *STRING),
        ("game_date", *DATE),
        ("player_lookup", *STRING),
        ("game_id", *STRING),
        ("attempt", *INT64),
        ("batch_id", *STRING),
        ("trigger_source", *STRING),
        ("claimed_at", *TIMESTAMP),
        ("published_at", *TIMESTAMP),
        ("message_id", *STRING),
    ),
)
TABLES = {table.key: table for table in (SCHEDULE, CONTEXT, FEATURES, PREDICTIONS)}
LEDGER_COLUMNS = LEDGER.column_names


class LedgerTableMissing(LookupError):
    """include_ledger was asked for but nba_orchestration.request_ledger does not exist."""
