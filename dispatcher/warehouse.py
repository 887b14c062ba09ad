"""The warehouse the marts live in: DuckDB (embedded default) or BigQuery.

Queries are written once, in BigQuery's named-parameter form (``@game_date``),
and always bound, never formatted. Tables are named ``dataset.table``; BigQuery
resolves them in the client's project, DuckDB as ``schema.table``.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from .config import Settings

_PARAM = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")


class WarehouseError(RuntimeError):
    """The warehouse could not run a query."""


class TransactionConflict(WarehouseError):
    """A concurrent transaction changed the same rows; retrying may succeed."""


class Warehouse(Protocol):
    kind: str

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read query; rows as dicts."""

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement."""

    def close(self) -> None:
        """Release the connection."""


def connect(settings: Settings) -> Warehouse:
    if settings.warehouse == "duckdb":
        if not Path(settings.duckdb_path).exists():
            raise WarehouseError(
                f"no DuckDB warehouse at {settings.duckdb_path}: run `dbt build` there first"
                " (or `dispatcher demo`), or set DISPATCHER_DUCKDB_PATH"
            )
        return DuckDBWarehouse(settings.duckdb_path)
    return BigQueryWarehouse(
        project=settings.gcp_project or "",
        api_endpoint=settings.bigquery_api_endpoint,
        location=settings.bigquery_location,
        timeout=settings.query_timeout_seconds,
    )


def _plain(value: Any) -> Any:
    """Warehouse values as plain Python: Decimal -> float, aware datetimes -> naive UTC."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


class DuckDBWarehouse:
    """One DuckDB file. The file admits one writing process at a time: opening it
    while another process holds it is retried until ``lock_timeout`` passes."""

    kind = "duckdb"

    def __init__(self, path: Path | str, *, lock_timeout: float = 30.0) -> None:
        import duckdb

        self.path = Path(path)
        deadline = time.monotonic() + lock_timeout
        delay = 0.05
        while True:
            try:
                self._con = duckdb.connect(str(self.path))
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise WarehouseError(f"cannot open {self.path}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        self._con.execute("set TimeZone = 'UTC'")

    @staticmethod
    def _sql(sql: str) -> str:
        return _PARAM.sub(r"$\1", sql)

    def _execute(self, sql: str, params: Mapping[str, Any] | None):
        import duckdb

        try:
            return self._con.execute(self._sql(sql), dict(params or {}))
        except duckdb.CatalogException as exc:
            raise WarehouseError(f"{exc} (has `dbt build` run on {self.path}?)") from exc

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        cursor = self._execute(sql, params)
        names = [column[0] for column in cursor.description]
        return [
            {name: _plain(value) for name, value in zip(names, row, strict=True)}
            for row in cursor.fetchall()
        ]

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._execute(sql, params)

    def transaction(
        self, statements: Sequence[str], params: Mapping[str, Any] | None = None
    ) -> None:
        """Run statements atomically; TransactionConflict when a concurrent one won."""
        import duckdb

        values = dict(params or {})
        self._con.begin()
        try:
            for statement in statements:
                sql = self._sql(statement)
                used = {name: values[name] for name in _PARAM.findall(statement)}
                self._con.execute(sql, used)
            self._con.commit()
        except duckdb.TransactionException as exc:
            self._con.rollback()
            raise TransactionConflict(str(exc)) from exc
        except Exception:
            self._con.rollback()
            raise

    @property
    def connection(self):
        return self._con

    def close(self) -> None:
        self._con.close()


class BigQueryWarehouse:
    """google-cloud-bigquery with named parameters and bounded time on every call."""

    kind = "bigquery"

    def __init__(
        self,
        *,
        project: str,
        api_endpoint: str | None = None,
        location: str = "US",
        timeout: float = 60.0,
        client=None,
    ) -> None:
        from google.cloud import bigquery

        self._bigquery = bigquery
        self.timeout = timeout
        self.location = location
        if client is None:
            kwargs: dict[str, Any] = {"project": project, "location": location}
            if api_endpoint:
                from google.api_core.client_options import ClientOptions
                from google.auth.credentials import AnonymousCredentials

                kwargs["client_options"] = ClientOptions(api_endpoint=api_endpoint)
                kwargs["credentials"] = AnonymousCredentials()
            client = bigquery.Client(**kwargs)
        self.client = client

    def _parameter(self, name: str, value: Any):
        bq = self._bigquery
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            items = list(value)
            kind = _scalar_type(items[0]) if items else "STRING"
            return bq.ArrayQueryParameter(name, kind, items)
        return bq.ScalarQueryParameter(name, _scalar_type(value), value)

    def _job(self, sql: str, params: Mapping[str, Any] | None):
        config = self._bigquery.QueryJobConfig(
            query_parameters=[self._parameter(k, v) for k, v in (params or {}).items()],
            job_timeout_ms=int(self.timeout * 1000),
        )
        try:
            job = self.client.query(
                sql, job_config=config, timeout=self.timeout, job_retry=None
            )
            return job, job.result(timeout=self.timeout)
        except Exception as exc:  # google.api_core raises many types; one error for callers
            raise WarehouseError(f"BigQuery query failed: {exc}") from exc

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        _, rows = self._job(sql, params)
        return [{key: _plain(value) for key, value in row.items()} for row in rows]

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._job(sql, params)

    def conflicting(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run mutating DML; a concurrent-update abort becomes TransactionConflict."""
        try:
            self._job(sql, params)
        except WarehouseError as exc:
            text = str(exc).lower()
            if "concurrent update" in text or "aborted" in text or "serialize access" in text:
                raise TransactionConflict(str(exc)) from exc
            raise

    def close(self) -> None:
        self.client.close()


def _scalar_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, Decimal):
        return "NUMERIC"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    return "STRING"
