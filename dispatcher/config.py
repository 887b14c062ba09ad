"""Settings for one dispatcher process, read from DISPATCHER_* environment variables."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

WAREHOUSES = ("duckdb", "bigquery")
TRANSPORTS = ("local", "pubsub")

#: The repository root holds dbt_project.yml and profiles.yml.
DEFAULT_DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent


LOCAL_OUTBOX_NEEDS_DUCKDB = (
    "the local transport keeps its outbox in the DuckDB warehouse: with"
    " DISPATCHER_WAREHOUSE=bigquery set DISPATCHER_TRANSPORT=pubsub"
)


class ConfigError(ValueError):
    """A setting has a value the dispatcher cannot use."""


@dataclass(frozen=True)
class Settings:
    warehouse: str = "duckdb"
    duckdb_path: Path = Path("warehouse.duckdb")
    gcp_project: str | None = None
    bigquery_api_endpoint: str | None = None
    bigquery_location: str = "US"
    transport: str = "local"
    dbt_project_dir: Path = DEFAULT_DBT_PROJECT_DIR
    dbt_target_path: Path | None = None
    query_timeout_seconds: float = 60.0
    publish_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        for name in ("duckdb_path", "dbt_project_dir", "dbt_target_path"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.warehouse not in WAREHOUSES:
            raise ConfigError(
                f"warehouse must be one of {', '.join(WAREHOUSES)}, got {self.warehouse!r}"
            )
        if self.transport not in TRANSPORTS:
            raise ConfigError(
                f"transport must be one of {', '.join(TRANSPORTS)}, got {self.transport!r}"
            )
        for name in ("publish_timeout_seconds", "query_timeout_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.warehouse == "bigquery" and not self.gcp_project:
            raise ConfigError("DISPATCHER_GCP_PROJECT is required with the bigquery warehouse")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "warehouse": env.get("DISPATCHER_WAREHOUSE", "duckdb"),
            "duckdb_path": Path(env.get("DISPATCHER_DUCKDB_PATH", "warehouse.duckdb")),
            "gcp_project": env.get("DISPATCHER_GCP_PROJECT") or None,
            "bigquery_api_endpoint": env.get("DISPATCHER_BIGQUERY_API_ENDPOINT") or None,
            "bigquery_location": env.get("DISPATCHER_BIGQUERY_LOCATION", "US"),
            "transport": env.get("DISPATCHER_TRANSPORT", "local"),
            "dbt_project_dir": Path(
                env.get("DISPATCHER_DBT_PROJECT_DIR", str(DEFAULT_DBT_PROJECT_DIR))
            ),
        }
        if env.get("DISPATCHER_PUBLISH_TIMEOUT"):
            values["publish_timeout_seconds"] = _seconds(env, "DISPATCHER_PUBLISH_TIMEOUT")
        if env.get("DISPATCHER_DBT_TARGET_PATH"):
            values["dbt_target_path"] = Path(env["DISPATCHER_DBT_TARGET_PATH"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def check_combination(self) -> None:
        """Settings that are each valid but cannot work together: a clear ConfigError at
        start rather than a failure after the first claim."""
        if self.warehouse == "bigquery" and self.transport == "local":
            raise ConfigError(LOCAL_OUTBOX_NEEDS_DUCKDB)
        if self.transport == "pubsub" and not self.gcp_project:
            raise ConfigError("DISPATCHER_GCP_PROJECT is required with DISPATCHER_TRANSPORT=pubsub")

    def with_(self, **changes) -> Settings:
        return replace(self, **changes)

    @property
    def dbt_target(self) -> str:
        """The profiles.yml output this warehouse runs on."""
        if self.warehouse == "duckdb":
            return "local"
        return "bq_emulator" if self.bigquery_api_endpoint else "bigquery"

    def dbt_env(self) -> dict[str, str]:
        """The variables profiles.yml reads for this target."""
        env = {
            "DISPATCHER_DUCKDB_PATH": str(self.duckdb_path),
            "DISPATCHER_BIGQUERY_LOCATION": self.bigquery_location,
        }
        if self.gcp_project:
            env["DISPATCHER_GCP_PROJECT"] = self.gcp_project
        if self.bigquery_api_endpoint:
            env["DISPATCHER_BIGQUERY_API_ENDPOINT"] = self.bigquery_api_endpoint
        return env


def _seconds(env: Mapping[str, str], name: str) -> float:
    """A positive, finite number of seconds from the environment, or a ConfigError naming it."""
    text = env[name]
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {text!r}")
    return value
