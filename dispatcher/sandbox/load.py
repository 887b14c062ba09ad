"""Writes sample slates into a warehouse: rows spooled to NDJSON, then bulk-loaded into
DuckDB or BigQuery in place of the written dates' rows.

The clients (duckdb, google-cloud-bigquery) are imported inside the writers.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from .slate import Slate
from .tables import LEDGER, TABLES, LedgerTableMissing, Table

__all__ = ["Spool", "spool_ndjson", "write_bigquery", "write_duckdb"]


# --- NDJSON (the bulk path of both writers) -------------------------------------------


def _json_value(value: Any) -> Any:
    # Naive UTC text: DuckDB TIMESTAMP and BigQuery TIMESTAMP both read it as UTC.
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


@dataclass
class Spool:
    """Slates spooled to one NDJSON file per table: what a bulk load needs."""

    dates: list[date]
    files: dict[str, Path]
    rows: dict[str, int]


def spool_ndjson(
    directory: Path, slates: Slate | Iterable[Slate], tables: Sequence[Table]
) -> Spool:
    """Write each table's rows of every slate (one pass, so a generator of slates keeps
    only one slate in memory) as newline-delimited JSON with exactly the table's columns."""
    items = [slates] if isinstance(slates, Slate) else slates
    encoder = json.JSONEncoder(default=_json_value, separators=(",", ":"))
    files = {t.key: Path(directory) / f"{t.key}.ndjson" for t in tables}
    rows = dict.fromkeys(files, 0)
    dates: list[date] = []
    seen: set[date] = set()
    handles = {key: path.open("w", encoding="utf-8") for key, path in files.items()}
    try:
        for item in items:
            if not isinstance(item, Slate):
                raise TypeError(f"expected Slate objects, got {type(item).__name__}")
            if item.game_date in seen:
                raise ValueError(f"two slates for game_date {item.game_date} in one write")
            seen.add(item.game_date)
            dates.append(item.game_date)
            for table in tables:
                out, columns = handles[table.key], table.column_names
                for row in item.rows(table.key):
                    out.write(encoder.encode({column: row[column] for column in columns}))
                    out.write("\n")
                rows[table.key] += len(item.rows(table.key))
    finally:
        for handle in handles.values():
            handle.close()
    return Spool(dates=dates, files=files, rows=rows)


# --- DuckDB ---------------------------------------------------------------------------


def write_duckdb(
    con_or_path: Any, slate: Slate | Iterable[Slate], include_ledger: bool = False
) -> dict[str, int]:
    """Replace the slate's game_date rows in a DuckDB database; return rows written per table.

    `con_or_path` is a duckdb connection or a database file path. Schemas and the four
    upstream tables are created if missing; each written date's rows are deleted and
    re-inserted in one transaction, other dates are left alone. Several slates (a list or
    a generator, for a history) go in one pass: one delete and one bulk insert per table.
    `include_ledger` also replaces those dates' rows of nba_orchestration.request_ledger,
    which dbt must have created (LedgerTableMissing otherwise, before anything is written).
    """
    import duckdb

    if isinstance(con_or_path, str | Path):
        with duckdb.connect(str(con_or_path)) as con:
            return _write_duckdb(con, slate, include_ledger)
    return _write_duckdb(con_or_path, slate, include_ledger)


def _duckdb_columns(con: Any, table: Table) -> set[str]:
    found = con.execute(
        "select column_name from information_schema.columns "
        "where table_catalog = current_database() and table_schema = ? and table_name = ?",
        [table.schema, table.name],
    ).fetchall()
    return {name for (name,) in found}


def _write_duckdb(
    con: Any, slates: Slate | Iterable[Slate], include_ledger: bool
) -> dict[str, int]:
    tables = list(TABLES.values())
    if include_ledger:
        present = _duckdb_columns(con, LEDGER)
        if not present:
            raise LedgerTableMissing(
                f"{LEDGER.schema}.{LEDGER.name} does not exist: run `dbt build` first "
                "(dbt creates the request ledger), or write without include_ledger"
            )
        missing = [c for c in LEDGER.column_names if c not in present]
        if missing:
            raise LedgerTableMissing(
                f"{LEDGER.schema}.{LEDGER.name} lacks columns {missing}: rebuild it with dbt"
            )
        tables.append(LEDGER)
    with tempfile.TemporaryDirectory(prefix="slate-") as tmp:
        spool = spool_ndjson(Path(tmp), slates, tables)
        con.execute("begin transaction")
        try:
            for schema in sorted({t.schema for t in TABLES.values()}):
                con.execute(f"create schema if not exists {schema}")
            for table in TABLES.values():
                con.execute(table.duckdb_ddl())
            for table in tables:
                con.execute(
                    f"delete from {table.schema}.{table.name} "
                    "where game_date in (select unnest(?::date[]))",
                    [spool.dates],
                )
                if spool.rows[table.key]:
                    columns = ", ".join(table.column_names)
                    types = ", ".join(f"'{c}': '{duck}'" for c, duck, _ in table.columns)
                    con.execute(
                        f"insert into {table.schema}.{table.name} ({columns}) "
                        f"select {columns} from read_json(?, format = 'newline_delimited', "
                        f"columns = {{{types}}})",
                        [str(spool.files[table.key])],
                    )
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    return spool.rows


# --- BigQuery -------------------------------------------------------------------------


def write_bigquery(
    client: Any,
    project: str,
    slate: Slate | Iterable[Slate],
    include_ledger: bool = False,
    timeout: float = 60.0,
) -> dict[str, int]:
    """Replace the slate's game_date rows in BigQuery; return rows written per table.

    `client` is a google.cloud.bigquery.Client. Datasets and date-partitioned tables are
    created with DDL if missing; each table's rows for the written dates are removed with
    a parameterised DELETE, then loaded from NDJSON with load_table_from_file. Every API
    call and job waits at most `timeout` seconds and jobs are not retried. Not atomic
    across tables: a failure part-way leaves a date to be rewritten.
    `include_ledger` also replaces those dates' request_ledger rows (the table must exist).
    """
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    retry = bigquery.DEFAULT_RETRY.with_timeout(timeout)
    tables = list(TABLES.values())
    if include_ledger:
        ledger_ref = f"{project}.{LEDGER.schema}.{LEDGER.name}"
        try:
            ledger = client.get_table(ledger_ref, retry=retry, timeout=timeout)
        except NotFound as exc:
            raise LedgerTableMissing(
                f"{ledger_ref} does not exist: run `dbt build` first (dbt creates the "
                "request ledger), or write without include_ledger"
            ) from exc
        missing = [c for c in LEDGER.column_names if c not in {f.name for f in ledger.schema}]
        if missing:
            raise LedgerTableMissing(f"{ledger_ref} lacks columns {missing}: rebuild it with dbt")
        tables.append(LEDGER)

    def run(sql: str, parameters: Sequence[Any] = ()) -> None:
        config = bigquery.QueryJobConfig(query_parameters=list(parameters))
        job = client.query(sql, job_config=config, retry=retry, timeout=timeout, job_retry=None)
        job.result(timeout=timeout, retry=retry)

    with tempfile.TemporaryDirectory(prefix="slate-") as tmp:
        spool = spool_ndjson(Path(tmp), slate, tables)
        for schema in sorted({t.schema for t in TABLES.values()}):
            run(f"create schema if not exists `{project}.{schema}`")
        for table in TABLES.values():
            run(table.bigquery_ddl(project))
        for table in tables:
            run(
                f"delete from `{project}.{table.schema}.{table.name}` "
                "where game_date in unnest(@game_dates)",
                [bigquery.ArrayQueryParameter("game_dates", "DATE", spool.dates)],
            )
            if not spool.rows[table.key]:
                continue
            config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
                write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            )
            with spool.files[table.key].open("rb") as source:
                job = client.load_table_from_file(
                    source,
                    f"{project}.{table.schema}.{table.name}",
                    job_config=config,
                    timeout=timeout,
                )
            job.result(timeout=timeout, retry=retry)
    return spool.rows
