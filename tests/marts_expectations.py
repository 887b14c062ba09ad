"""What the marts must say for a SlateSpec, derived from its knobs."""

from __future__ import annotations

from dispatcher.project import dbt_vars
from dispatcher.sandbox.slate import SlateSpec


def expected_readiness(spec: SlateSpec) -> dict:
    c, knobs = spec.counts(), dbt_vars()
    return {
        "players_in_slate": c.players,
        "players_expected": c.expected,
        "players_in_feature_store": c.in_feature_store,
        "players_ready": c.ready,
        "players_not_ready": c.expected - c.ready,
        "is_ready": c.ready * 100 >= knobs["ready_pct_threshold"] * c.expected
        or c.ready >= knobs["ready_count_threshold"],
        "is_critical": c.ready < knobs["critical_ready_count"],
    }


def expected_coverage(spec: SlateSpec) -> dict:
    c = spec.counts()
    return {
        "players_expected": c.expected,
        "players_ready": c.ready,
        "players_predicted": c.predicted,
        "players_in_flight": c.in_flight,
        "players_pending": c.pending,
        "players_not_ready": c.not_ready,
        "players_missing": c.expected - c.predicted - c.in_flight,
    }


def expected_states(spec: SlateSpec) -> dict[str, int]:
    c = spec.counts()
    return {
        "predicted": c.predicted,
        "in_flight": c.in_flight,
        "pending": c.pending,
        "not_ready": c.not_ready,
    }
