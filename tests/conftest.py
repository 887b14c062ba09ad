"""Shared fixtures. Each section is owned by whoever wrote it; add new ones in their own section."""

from __future__ import annotations

import os

import pytest

# No tests/__init__.py: pytest's default "prepend" import mode puts tests/ on sys.path.
from servers import Server, start_bigquery_emulator, start_pubsub_emulator

# ---------------------------------------------------------------------------------------
# Emulators: real servers on 127.0.0.1, started lazily (only when a test asks for one),
# once per session, stopped at session end. Start/stop logic lives in tests/servers.py.
# On CI a server that cannot start fails the tests that need it; elsewhere they skip.
# ---------------------------------------------------------------------------------------

EMULATOR_START_TIMEOUT = 60


def pytest_collection_modifyitems(config, items) -> None:
    """Two workers (pytest-xdist, --dist loadgroup): every test on the BigQuery
    scenarios (a fixture's dependency, or a `[bigquery…]` parameter that fetches them) in
    one group, so their build on the emulator (minutes) is made once, by one worker;
    every other test with the rest of its module, so a module's fixtures are built once
    (a module that starts an emulator of its own runs beside the group)."""
    for item in items:
        params = item.nodeid.partition("[")[2].lower()
        on_scenarios = "bigquery" in params or "bigquery_scenarios" in getattr(
            item, "fixturenames", ()
        )
        group = "bigquery" if on_scenarios else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def _start_emulator(request, tmp_path_factory, name: str, start) -> Server:
    workdir = tmp_path_factory.mktemp(f"{name}-emulator")
    try:
        server = start(workdir, timeout=EMULATOR_START_TIMEOUT)
    except Exception as exc:  # any reason it cannot start is reported the same way
        reason = f"{name} emulator could not start: {exc}"
        if _on_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def bigquery_emulator(request, tmp_path_factory) -> Server:
    """bqemulator (BigQuery REST API); `.url` is the client's api_endpoint."""
    return _start_emulator(request, tmp_path_factory, "bigquery", start_bigquery_emulator)


@pytest.fixture(scope="session")
def pubsub_emulator(request, tmp_path_factory) -> Server:
    """Cloud SDK Pub/Sub emulator; `.host` is the PUBSUB_EMULATOR_HOST value."""
    return _start_emulator(request, tmp_path_factory, "pubsub", start_pubsub_emulator)


@pytest.fixture
def bigquery_client(bigquery_emulator: Server):
    """A google-cloud-bigquery client pointed at the emulator (project "nba-test")."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(
        project="nba-test",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=bigquery_emulator.url),
    )
    yield client
    client.close()


# --- end of emulator fixtures ----------------------------------------------------------


# ---------------------------------------------------------------------------------------
# Warehouses holding the shared scenario slates (tests/scenarios.py), built once per
# session with dbt and "now" pinned, on DuckDB and on the BigQuery emulator.
# ---------------------------------------------------------------------------------------


def _build_scenarios(settings, write) -> None:
    import scenarios

    from dispatcher import dbt
    from dispatcher.sandbox.slate import generate_slate

    slates = [generate_slate(spec) for spec in (*scenarios.ALL, *scenarios.GAME_DAY_EDGES)]
    write(slates, include_ledger=False)
    dbt.build(settings, vars={"as_of": scenarios.AS_OF})
    write(slates, include_ledger=True)


@pytest.fixture(scope="session")
def duckdb_scenarios(tmp_path_factory):
    """Settings of a DuckDB warehouse with every scenario slate, marts built."""
    from dispatcher.config import Settings
    from dispatcher.sandbox.load import write_duckdb

    workdir = tmp_path_factory.mktemp("duckdb-scenarios")
    settings = Settings(
        duckdb_path=workdir / "warehouse.duckdb", dbt_target_path=workdir / "target"
    )
    _build_scenarios(
        settings,
        lambda slates, include_ledger: write_duckdb(
            settings.duckdb_path, slates, include_ledger=include_ledger
        ),
    )
    return settings


@pytest.fixture(scope="session")
def bigquery_scenarios(bigquery_emulator, tmp_path_factory):
    """Settings of the BigQuery emulator with every scenario slate, marts built."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from dispatcher.config import Settings
    from dispatcher.sandbox.load import write_bigquery

    workdir = tmp_path_factory.mktemp("bigquery-scenarios")
    settings = Settings(
        warehouse="bigquery",
        gcp_project="nba-test",
        bigquery_api_endpoint=bigquery_emulator.url,
        dbt_target_path=workdir / "target",
    )
    client = bigquery.Client(
        project="nba-test",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=bigquery_emulator.url),
    )
    try:
        _build_scenarios(
            settings,
            lambda slates, include_ledger: write_bigquery(
                client, "nba-test", slates, include_ledger=include_ledger
            ),
        )
    finally:
        client.close()
    return settings


# --- end of scenario warehouses --------------------------------------------------------


# ---------------------------------------------------------------------------------------
# Alert channels' far ends on 127.0.0.1, one per test: a Slack webhook stand-in, SMTP
# servers (plain, AUTH, STARTTLS), a refused port and a silent one. tests/alert_servers.py.
# ---------------------------------------------------------------------------------------

from alert_servers import (  # noqa: E402,F401 (fixtures: pytest finds them here)
    refused_port_fixture,  # the fixture `refused_port`
    slack_server,
    smtp_auth_server,
    smtp_black_hole,
    smtp_server,
    smtp_tls_server,
    tls_files,
)

# --- end of alert servers --------------------------------------------------------------
