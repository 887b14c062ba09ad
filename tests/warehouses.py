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


def build_template(
    workdir: Path, specs: Iterable[SlateSpec], *, vars: Mapping[str, Any] | None = None
) -> Path:
    """Write the slates, build the models (with dbt ``vars``), then add the slates'
    in-flight requests."""
    settings = Settings(duckdb_path=workdir / FILE_NAME, dbt_target_path=workdir / "target")
    slates = [generate_slate(spec) for spec in specs]
    write_duckdb(settings.duckdb_path, slates)
    dbt.build(settings, vars=vars)
    write_duckdb(settings.duckdb_path, slates, include_ledger=True)
    return settings.duckdb_path


def copy_of(template: Path, tmp_path: Path) -> Settings:
    """Settings of a private copy of a built template."""
    path = tmp_path / template.name
    shutil.copy(template, path)
    return Settings(duckdb_path=path, dbt_target_path=tmp_path / "target")
