"""Settings for one dispatcher process, read from DISPATCHER_* environment variables."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

WAREHOUSES = ("duckdb", "bigquery")
TRANSPORTS = ("local", "pubsub")

#: The repository root holds dbt_project.yml and profiles.yml.
DEFAULT_DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_PUBLISH_TIMEOUT = 10.0
#: Seconds a confirm may take after the publish, within the dbt var claim_lease_seconds.
CONFIRM_MARGIN_SECONDS = 20


LOCAL_OUTBOX_NEEDS_DUCKDB = (
    "the local transport keeps its outbox in the DuckDB warehouse: with"
    " DISPATCHER_WAREHOUSE=bigquery set DISPATCHER_TRANSPORT=pubsub"
)


class ConfigError(ValueError):
    """A setting has a value the dispatcher cannot use."""


@dataclass(frozen=True)
class KnownSetting:
    """One environment variable of the project: the one home of its name, default and
    meaning (`dispatcher config` lists them; the README's configuration table mirrors it)."""

    name: str
    #: As the operator would write it; None: unset (no value).
    default: str | None
    meaning: str
    #: Never shown: `dispatcher config` prints a mask instead (see is_secret).
    secret: bool = False
    #: Listed so that it has one home, but nothing reads it yet.
    planned: bool = False


KEYFILE = "DISPATCHER_BIGQUERY_KEYFILE"
PUBSUB_EMULATOR_HOST = "PUBSUB_EMULATOR_HOST"

KNOWN_SETTINGS: tuple[KnownSetting, ...] = (
    KnownSetting("DISPATCHER_WAREHOUSE", "duckdb", "`duckdb` or `bigquery`"),
    KnownSetting("DISPATCHER_DUCKDB_PATH", "warehouse.duckdb",
                 "the embedded warehouse; profiles.yml reads it too"),
    KnownSetting("DISPATCHER_GCP_PROJECT", None,
                 "BigQuery and Pub/Sub project (required with `bigquery` or `pubsub`)"),
    KnownSetting("DISPATCHER_BIGQUERY_API_ENDPOINT", None,
                 "BigQuery API emulator or private endpoint: dbt target `bq_emulator`,"
                 " anonymous credentials"),
    KnownSetting("DISPATCHER_BIGQUERY_LOCATION", "US", "BigQuery location"),
    KnownSetting(KEYFILE, None,
                 "service-account key file for BigQuery, Pub/Sub and dbt; unset:"
                 " Application Default Credentials"),
    KnownSetting("DISPATCHER_TRANSPORT", "local",
                 "`local` (outbox table in the DuckDB file) or `pubsub`"),
    KnownSetting(PUBSUB_EMULATOR_HOST, None,
                 "standard: the Pub/Sub client talks to this emulator (no credentials)"),
    KnownSetting("DISPATCHER_PUBLISH_TIMEOUT", "10",
                 "seconds a publish batch may take before its messages fail"),
    KnownSetting("DISPATCHER_LOG_FORMAT", "auto",
                 "logs on stderr: json, text, or auto (text on a terminal, else JSON)"),
    KnownSetting("DISPATCHER_DBT_PROJECT_DIR", str(DEFAULT_DBT_PROJECT_DIR),
                 "where the dispatcher runs dbt (dbt_project.yml and profiles.yml)"),
    KnownSetting("DISPATCHER_DBT_TARGET_PATH", None,
                 "dbt's target and log directory; unset: the project's `target`"),
    KnownSetting("DISPATCHER_DBT_TARGET", "local",
                 "profiles.yml target when dbt is run by hand (the dispatcher picks its own)"),
    # The alert channels (alerts.channels.configured_routes); the log is always one.
    KnownSetting("DISPATCHER_SLACK_WEBHOOK_URL", None,
                 "Slack channel: incoming-webhook URL; unset: no Slack", secret=True),
    KnownSetting("DISPATCHER_ALERT_SLACK_LEVELS", "warning,critical",
                 "Slack channel: the alert levels it is sent, comma-separated"),
    KnownSetting("DISPATCHER_SMTP_HOST", None, "email channel: SMTP server; unset: no email"),
    KnownSetting("DISPATCHER_SMTP_PORT", "587", "email channel: SMTP port"),
    KnownSetting("DISPATCHER_SMTP_USERNAME", None,
                 "email channel: SMTP user (with the password); unset: no login"),
    KnownSetting("DISPATCHER_SMTP_PASSWORD", None, "email channel: SMTP password",
                 secret=True),
    KnownSetting("DISPATCHER_SMTP_STARTTLS", "true", "email channel: STARTTLS (true or false)"),
    KnownSetting("DISPATCHER_ALERT_EMAIL_FROM", None,
                 "email channel: sender address (required with the host)"),
    KnownSetting("DISPATCHER_ALERT_EMAIL_TO", None,
                 "email channel: recipients, comma-separated (required with the host)"),
    KnownSetting("DISPATCHER_ALERT_EMAIL_LEVELS", "warning,critical",
                 "email channel: the alert levels it is sent, comma-separated"),
    KnownSetting("DISPATCHER_ALERT_REPEAT_HOURS", "24",
                 "repeat interval of a persisting alert"),
    # `dispatcher serve`: the OIDC check of Pub/Sub push and Cloud Scheduler requests.
    KnownSetting("DISPATCHER_PUSH_AUDIENCE", None,
                 "serve: OIDC audience the Bearer tokens must carry; unset: no check"),
    KnownSetting("DISPATCHER_PUSH_SERVICE_ACCOUNTS", None,
                 "serve: the service accounts (token emails) allowed, comma-separated;"
                 " required with DISPATCHER_PUSH_AUDIENCE"),
    KnownSetting("DISPATCHER_PUSH_CERTS_URL", "https://www.googleapis.com/oauth2/v1/certs",
                 "serve: where Google's token-signing certificates are fetched"),
    KnownSetting("PORT", None,
                 "standard (Cloud Run sets it): serve's port when --port is not given;"
                 " unset: 8080"),
    KnownSetting("DISPATCHER_START_WAIT_MINUTES", "30",
                 "minutes `start --wait-minutes` and serve's POST /start wait for Phase 4"
                 " readiness (0 to 180)"),
)  # fmt: skip

_KNOWN = {setting.name: setting for setting in KNOWN_SETTINGS}

#: Names that mark a secret, whatever the table says.
SECRET_MARKERS = ("PASSWORD", "WEBHOOK", "TOKEN", "SECRET")
MASK = "********"


def is_secret(name: str) -> bool:
    """Whether a variable's value must never be shown: marked so in the table, or named
    like a secret (*PASSWORD*, *WEBHOOK*, *TOKEN*, *SECRET*)."""
    known = _KNOWN.get(name)
    return bool(known and known.secret) or any(m in name.upper() for m in SECRET_MARKERS)


def _env(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value, or its default from KNOWN_SETTINGS: empty counts as unset."""
    return env.get(name) or _KNOWN[name].default


def setting(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A known setting's value from the environment (or its default from KNOWN_SETTINGS)."""
    return _env(os.environ if environ is None else environ, name)


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
    publish_timeout_seconds: float = DEFAULT_PUBLISH_TIMEOUT
    #: A persisting breach is sent again after this many hours (DISPATCHER_ALERT_REPEAT_HOURS).
    alert_repeat_hours: float = 24.0
    #: A service-account key file (DISPATCHER_BIGQUERY_KEYFILE); None: Application
    #: Default Credentials.
    bigquery_keyfile: Path | None = None

    def __post_init__(self) -> None:
        for name in ("duckdb_path", "dbt_project_dir", "dbt_target_path", "bigquery_keyfile"):
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
        for name in ("publish_timeout_seconds", "query_timeout_seconds", "alert_repeat_hours"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be a positive number")
        if self.warehouse == "bigquery" and not self.gcp_project:
            raise ConfigError("DISPATCHER_GCP_PROJECT is required with the bigquery warehouse")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "warehouse": _env(env, "DISPATCHER_WAREHOUSE"),
            "duckdb_path": _env(env, "DISPATCHER_DUCKDB_PATH"),
            "gcp_project": _env(env, "DISPATCHER_GCP_PROJECT"),
            "bigquery_api_endpoint": _env(env, "DISPATCHER_BIGQUERY_API_ENDPOINT"),
            "bigquery_location": _env(env, "DISPATCHER_BIGQUERY_LOCATION"),
            "bigquery_keyfile": _env(env, KEYFILE),
            "transport": _env(env, "DISPATCHER_TRANSPORT"),
            "dbt_project_dir": _env(env, "DISPATCHER_DBT_PROJECT_DIR"),
            "dbt_target_path": _env(env, "DISPATCHER_DBT_TARGET_PATH"),
            "publish_timeout_seconds": _seconds(env, "DISPATCHER_PUBLISH_TIMEOUT"),
            "alert_repeat_hours": _positive(env, "DISPATCHER_ALERT_REPEAT_HOURS", "hours"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def check_combination(self) -> None:
        """Settings that are each valid but cannot work together, and a keyfile that
        cannot be used: one ConfigError at start rather than a failure after the first
        claim."""
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def problems(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """What check_combination refuses, one message each (empty: good to go); the
        alert channels' settings are read from ``environ`` (unset: the process's)."""
        problems = alert_problems(environ)
        if self.warehouse == "bigquery" and self.transport == "local":
            problems.append(LOCAL_OUTBOX_NEEDS_DUCKDB)
        if self.transport == "pubsub" and not self.gcp_project:
            problems.append("DISPATCHER_GCP_PROJECT is required with DISPATCHER_TRANSPORT=pubsub")
        if self.bigquery_keyfile is not None:
            try:
                keyfile_credentials(self.bigquery_keyfile)
            except ConfigError as exc:
                problems.append(str(exc))
        if self.publish_timeout_seconds != DEFAULT_PUBLISH_TIMEOUT:
            problems += self._claim_lease_problems()
        return problems

    def _claim_lease_problems(self) -> list[str]:
        """A publish must end, and its confirm land, inside the claim lease: after it
        another dispatch may claim the same players. (Read only for a non-default
        timeout: the project's defaults fit, and dbt_project.yml costs a YAML parse.)"""
        from .project import dbt_vars

        lease = float(dbt_vars(self.dbt_project_dir).get("claim_lease_seconds", 0))
        if self.publish_timeout_seconds + CONFIRM_MARGIN_SECONDS <= lease:
            return []
        return [
            f"DISPATCHER_PUBLISH_TIMEOUT ({self.publish_timeout_seconds:g} s) plus"
            f" {CONFIRM_MARGIN_SECONDS} s for the confirm must stay within the dbt var"
            f" claim_lease_seconds ({lease:g} s): lower the timeout or raise the var"
        ]

    def credentials(self) -> Credentials | None:
        """The keyfile's service-account credentials; None: Application Default
        Credentials (the clients find them)."""
        if self.bigquery_keyfile is None:
            return None
        return keyfile_credentials(self.bigquery_keyfile)

    def bigquery_credentials(self) -> Credentials | None:
        """For the BigQuery client: none with an API endpoint (the emulator takes
        anonymous credentials, as dbt's bq_emulator target does), else credentials()."""
        return None if self.bigquery_api_endpoint else self.credentials()

    def pubsub_credentials(self) -> Credentials | None:
        """For the Pub/Sub clients: none with PUBSUB_EMULATOR_HOST (the library then
        talks to the emulator without credentials), else credentials(). Read when a
        client is built, as the library reads it."""
        return None if os.environ.get(PUBSUB_EMULATOR_HOST) else self.credentials()

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
        if self.bigquery_keyfile is not None:
            env[KEYFILE] = str(self.bigquery_keyfile)
        return env


def alert_problems(environ: Mapping[str, str] | None = None) -> list[str]:
    """What is wrong with the alert channels' settings (alerts.channels), one message."""
    from alerts.channels import configured_routes

    try:
        configured_routes(environ)
    except ConfigError as exc:
        return [str(exc)]
    return []


def _seconds(env: Mapping[str, str], name: str) -> float:
    """A positive, finite number of seconds from the environment (or its default), or a
    ConfigError naming it."""
    return _positive(env, name, "seconds")


def _positive(env: Mapping[str, str], name: str, unit: str) -> float:
    """A positive, finite number (of ``unit``) from the environment (or its default), or
    a ConfigError naming it."""
    text = _env(env, name) or ""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of {unit}, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number of {unit}, got {text!r}")
    return value


# -- the keyfile -------------------------------------------------------------------------

_KEY_FIELDS = ("client_email", "private_key", "token_uri")


def keyfile_credentials(path: Path) -> Credentials:
    """Service-account credentials from a key file, or a one-line ConfigError naming
    DISPATCHER_BIGQUERY_KEYFILE and the path. No message quotes the file's contents
    (nor an exception text that might): only the path and what is wrong with it.
    google.oauth2 is imported here, only when a keyfile is set."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{KEYFILE}: no such file: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{KEYFILE}: {path} is a directory, not a key file") from None
    except PermissionError:
        raise ConfigError(f"{KEYFILE}: cannot read {path}: permission denied") from None
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"{KEYFILE}: cannot read {path} ({type(exc).__name__})") from None
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ConfigError(
            f"{KEYFILE}: {path} is not a service-account key file (JSON with"
            ' "type": "service_account"); unset it to use Application Default Credentials'
        )
    missing = [name for name in _KEY_FIELDS if not isinstance(info.get(name), str)]
    if missing:
        raise ConfigError(f"{KEYFILE}: {path} lacks {', '.join(missing)}")
    from google.oauth2 import service_account

    try:
        return service_account.Credentials.from_service_account_file(str(path))
    except Exception as exc:  # the key does not parse: say which file, never its text
        raise ConfigError(
            f"{KEYFILE}: {path}: its private key cannot be loaded ({type(exc).__name__})"
        ) from None


# -- `dispatcher config` -----------------------------------------------------------------


@dataclass(frozen=True)
class SettingRow:
    """One variable as this process sees it; a secret's value is already masked."""

    name: str
    #: None: unset. A secret that is set shows MASK.
    value: str | None
    #: "environment" or "default".
    source: str
    meaning: str
    secret: bool = False
    planned: bool = False
    #: False: set in the environment, but not a variable the dispatcher reads.
    known: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "value": self.value, "source": self.source,
            "meaning": self.meaning, "secret": self.secret, "planned": self.planned,
            "known": self.known,
        }  # fmt: skip


@dataclass(frozen=True)
class ConfigReport:
    """The effective settings and what is wrong with them (`dispatcher config`)."""

    rows: list[SettingRow]
    problems: list[str]
    #: The profiles.yml target the dispatcher runs dbt on; None when the settings fail.
    dbt_target: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": list(self.problems),
            "dbt_target": self.dbt_target,
            "settings": [row.as_json() for row in self.rows],
        }


UNKNOWN_SETTING = "not a variable the dispatcher reads (a typo?); value not shown"


def describe(
    environ: Mapping[str, str] | None = None, *, options: Mapping[str, str] | None = None
) -> ConfigReport:
    """Every known setting with its value and source (secrets masked), then any other
    DISPATCHER_* variable set, then the problems the commands would refuse at start.

    ``options``: variable names that set command options (click's
    DISPATCHER_<COMMAND>_<OPTION>) and what they set, listed only when set."""
    env = os.environ if environ is None else environ
    rows = [_row(env, s.name, s.meaning, s.default, s.secret, s.planned) for s in KNOWN_SETTINGS]
    options = options or {}
    for name in sorted(n for n in env if n.startswith("DISPATCHER_") and n not in _KNOWN):
        if name in options:
            rows.append(_row(env, name, options[name], None, False, False))
        else:
            rows.append(SettingRow(name, None, "environment", UNKNOWN_SETTING, known=False))
    try:
        settings = Settings.from_env(dict(env))
    except ConfigError as exc:
        problems = [str(exc), *alert_problems(env)]
        keyfile = env.get(KEYFILE)
        if keyfile:  # checked on its own: the settings that use it did not come together
            try:
                keyfile_credentials(Path(keyfile))
            except ConfigError as bad:
                problems.append(str(bad))
        return ConfigReport(rows, problems)
    return ConfigReport(rows, settings.problems(env), settings.dbt_target)


def _row(
    env: Mapping[str, str], name: str, meaning: str, default: str | None, secret: bool,
    planned: bool,
) -> SettingRow:  # fmt: skip
    secret = secret or is_secret(name)
    text = env.get(name) or None
    value = text if text is not None else default
    if secret and value is not None:
        value = MASK
    return SettingRow(name, value, "environment" if text is not None else "default", meaning,
                      secret, planned)  # fmt: skip
