"""DuckDB warehouses for tests: build a template once (slates + dbt build), copy per test.

A copy keeps the template's file name: dbt-duckdb's views name the database after it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dispatcher import dbt
from dispatcher.config import Settings
from dispatcher.sandbox.load import write_duckdb
from dispatcher.sandbox.slate import SlateSpec, generate_slate

FILE_NAME = "warehouse.duckdb"
#: `dbt build` without its data and unit tests (a third of its time), for suites that
#: build a warehouse to run the dispatcher on, not to test the models.
NO_TESTS = ("--exclude-resource-type", "test", "--exclude-resource-type", "unit_test")


def build_template(
    workdir: Path,
    specs: Iterable[SlateSpec],
    *,
    vars: Mapping[str, Any] | None = None,
    tests: bool = True,
) -> Path:
    """Write the slates, build the models (with dbt ``vars``; without dbt's tests unless
    ``tests``), then add the slates' in-flight requests."""
    settings = Settings(duckdb_path=workdir / FILE_NAME, dbt_target_path=workdir / "target")
    slates = [generate_slate(spec) for spec in specs]
    write_duckdb(settings.duckdb_path, slates)
    dbt.run_dbt(settings, ["build", *(() if tests else NO_TESTS)], vars=vars)
    write_duckdb(settings.duckdb_path, slates, include_ledger=True)
    return settings.duckdb_path


def copy_of(template: Path, tmp_path: Path) -> Settings:
    """Settings of a private copy of a built template."""
    path = tmp_path / template.name
    shutil.copy(template, path)
    return Settings(duckdb_path=path, dbt_target_path=tmp_path / "target")
