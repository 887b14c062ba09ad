"""The marts on both warehouses report exactly what the slate knobs predict, and agree."""

from __future__ import annotations

from collections import Counter

import pytest
import scenarios
from marts_expectations import expected_coverage, expected_readiness, expected_states

from dispatcher import marts
from dispatcher.sandbox.slate import generate_slate
from dispatcher.warehouse import connect

WAREHOUSES = ["duckdb_scenarios", "bigquery_scenarios"]


@pytest.fixture(params=WAREHOUSES)
def warehouse(request):
    settings = request.getfixturevalue(request.param)
    wh = connect(settings)
    yield wh
    wh.close()


def _subset(row: dict, keys) -> dict:
    return {key: row[key] for key in keys}


@pytest.mark.parametrize("spec", scenarios.ALL, ids=lambda s: str(s.game_date))
def test_readiness_matches_the_knobs(warehouse, spec):
    want = expected_readiness(spec)
    row = marts.readiness(warehouse, spec.game_date)
    assert row is not None
    assert _subset(row, want) == want
    assert row["ready_pct"] == pytest.approx(
        round(100 * want["players_ready"] / want["players_expected"], 2)
    )


@pytest.mark.parametrize("spec", scenarios.ALL, ids=lambda s: str(s.game_date))
def test_coverage_and_pending_match_the_knobs(warehouse, spec):
    want = expected_coverage(spec)
    row = marts.coverage(warehouse, spec.game_date)
    assert _subset(row, want) == want
    states = Counter(p["state"] for p in marts.dispatch_state(warehouse, spec.game_date))
    assert {state: states.get(state, 0) for state in expected_states(spec)} == (
        expected_states(spec)
    )


def test_scenarios_cover_every_readiness_outcome():
    outcomes = {
        (expected_readiness(s)["is_ready"], expected_readiness(s)["is_critical"])
        for s in scenarios.ALL
    }
    assert outcomes == {(True, False), (False, False), (False, True)}


def test_the_pending_mart_holds_the_pending_players_only(warehouse):
    spec = scenarios.READY
    rows = marts.pending(warehouse, spec.game_date)
    states = {p["player_lookup"]: p for p in marts.dispatch_state(warehouse, spec.game_date)}
    assert len(rows) == spec.counts().pending
    assert {states[row["player_lookup"]]["state"] for row in rows} == {"pending"}
    assert all(row["game_date"] == spec.game_date for row in rows)
    # The request each pending player gets is the one its dispatch state announces.
    assert all(
        row["next_request_id"] == states[row["player_lookup"]]["next_request_id"]
        == f"{spec.game_date}/{row['player_lookup']}/{row['next_attempt']}"
        for row in rows
    )


def test_a_date_without_slate_has_no_rows(warehouse):
    assert marts.readiness(warehouse, scenarios.NO_SLATE_DATE) is None
    assert marts.dispatch_state(warehouse, scenarios.NO_SLATE_DATE) == []
    assert marts.pending(warehouse, scenarios.NO_SLATE_DATE) == []


def test_latency_for_a_complete_date(warehouse):
    spec = scenarios.COMPLETE
    row = marts.latency(warehouse, spec.game_date)
    assert row["players_predicted"] == row["players_expected"] == spec.counts().expected
    # 07:00 PT on 2026-11-24 (PST, UTC-8) is 15:00 UTC.
    assert row["sla_deadline_at"].isoformat() == "2026-11-24T15:00:00"
    assert row["is_sla_met"] is True
    assert row["first_requested_at"] is None
    assert row["latency_alert_level"] == "critical"  # Phase 4 done hours before "now", no request


def _all_rows(settings, spec):
    wh = connect(settings)
    try:
        return {
            "readiness": marts.readiness(wh, spec.game_date),
            "coverage": marts.coverage(wh, spec.game_date),
            "latency": marts.latency(wh, spec.game_date),
            "players": marts.dispatch_state(wh, spec.game_date),
        }
    finally:
        wh.close()


@pytest.mark.parametrize(
    "spec", (*scenarios.ALL, *scenarios.GAME_DAY_EDGES), ids=lambda s: str(s.game_date)
)
def test_duckdb_and_bigquery_agree_row_for_row(duckdb_scenarios, bigquery_scenarios, spec):
    local = _all_rows(duckdb_scenarios, spec)
    remote = _all_rows(bigquery_scenarios, spec)
    for mart in ("readiness", "coverage", "latency"):
        assert local[mart] == remote[mart], mart
    assert len(local["players"]) == generate_slate(spec).counts.expected
    for mine, theirs in zip(local["players"], remote["players"], strict=True):
        assert mine == theirs
