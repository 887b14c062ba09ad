"""The alert rules as people read them: fct_alert_conditions decides each rule's level;
this module asks for the rules a command owns and words them.

Which command asks for which rule:

=====================  ======================================================
dispatch (trigger,     phase4_critical, partial_dispatch, publish_failed, latency
start, retry)          (partial_dispatch is left out when the dispatch was refused
                       as critical or its publishes failed: those rules say more)
status                 coverage, latency, sla_missed
=====================  ======================================================

A rule observed at level ``ok`` is still an observation: it resolves a breach that
alert_log says was sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CONDITIONS = "nba_orchestration.fct_alert_conditions"

DISPATCH_RULES = ("phase4_critical", "partial_dispatch", "publish_failed", "latency")
STATUS_RULES = ("coverage", "latency", "sla_missed")
RULES = ("phase4_critical", "partial_dispatch", "publish_failed", "coverage", "latency",
         "sla_missed")  # fmt: skip
LEVELS = ("ok", "warning", "critical")


@dataclass(frozen=True)
class Observation:
    """A rule's level on a date now, worded for the breach and for its resolution."""

    game_date: dt.date
    rule: str
    level: str  # ok | warning | critical
    title: str
    message: str
    resolved_message: str
    next_command: str | None = None
    numbers: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


def conditions(warehouse, game_date: dt.date) -> dict[str, dict[str, Any]]:
    """fct_alert_conditions' rows of one date, by rule (empty: the date has none)."""
    rows = warehouse.query(
        f"select * from {CONDITIONS} where game_date = @game_date", {"game_date": game_date}
    )
    return {row["rule"]: row for row in rows}


def observe(
    warehouse,
    game_date: dt.date,
    rules: Iterable[str],
    *,
    publish: tuple[int, int] | None = None,
) -> list[Observation]:
    """The observations of ``rules`` on ``game_date``, in that order. ``publish`` is the
    run's (failed, attempted) publishes, the only rule not in the warehouse; without
    it publish_failed is not observed."""
    wanted = list(rules)
    rows = conditions(warehouse, game_date) if set(wanted) - {"publish_failed"} else {}
    out = []
    for rule in wanted:
        if rule == "publish_failed":
            if publish is not None:
                out.append(_publish_failed(game_date, *publish))
        elif rule in rows:
            out.append(_WORDING[rule](game_date, rows[rule]))
    return out


def _int(value: Any) -> int:
    return int(value or 0)


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _figures(row: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {name: row[name] for name in names if row.get(name) is not None}


def _phase4_critical(day: dt.date, row: Mapping[str, Any]) -> Observation:
    ready, expected = _int(row["players_ready"]), _int(row["players_expected"])
    floor = _int(row["critical_threshold"])
    message = (
        f"Phase 4 insufficient for {day}: {_int(row['games_scheduled'])} games scheduled but"
        " no expected player in the Phase 3 slate"
        if not expected
        else f"Phase 4 insufficient for {day}: {ready} players ready (< {floor})"
        f" of {expected} expected"
    )
    return Observation(
        day, "phase4_critical", row["level"], f"Phase 4 insufficient for {day}",
        message,
        f"Phase 4 recovered for {day}: {ready} of {expected} players ready",
        f"dispatcher plan --game-date {day}",
        _figures(row, "players_expected", "players_ready", "games_scheduled")
        | {"critical_ready_count": floor},
    )  # fmt: skip


def _partial_dispatch(day: dt.date, row: Mapping[str, Any]) -> Observation:
    missing, expected = _int(row["players_missing"]), _int(row["players_expected"])
    return Observation(
        day, "partial_dispatch", row["level"], f"Partial dispatch for {day}",
        f"Partial dispatch for {day}: {missing} of {expected} expected players neither"
        f" predicted nor requested (warning above {_num(row['missing_warning_pct']):g} %"
        f" or {_int(row['warning_threshold'])} players)",
        f"Dispatch complete for {day}: {missing} of {expected} expected players missing",
        f"dispatcher plan --game-date {day}",
        _figures(row, "players_expected", "players_ready", "players_predicted",
                 "players_in_flight", "players_missing"),
    )  # fmt: skip


def _coverage(day: dt.date, row: Mapping[str, Any]) -> Observation:
    pct = _num(row["coverage_pct"])
    shown = "unknown (no expected player)" if pct is None else f"{pct:.1f} %"
    predicted, expected = _int(row["players_predicted"]), _int(row["players_expected"])
    line = _num(row["warning_threshold"]) or 0
    return Observation(
        day, "coverage", row["level"], f"Prediction coverage {shown} for {day}",
        f"Prediction coverage for {day} is {shown}: {predicted} of {expected} players"
        f" predicted at the status check (warning below {line:g} %)",
        f"Prediction coverage for {day} is back to {shown}: {predicted} of {expected}"
        " players predicted",
        f"dispatcher retry --game-date {day}",
        _figures(row, "players_expected", "players_predicted", "players_in_flight",
                 "players_missing", "coverage_pct"),
    )  # fmt: skip


def _latency(day: dt.date, row: Mapping[str, Any]) -> Observation:
    minutes = _num(row["observed"])
    bound = row["critical_threshold"] if row["level"] == "critical" else row["warning_threshold"]
    waited = "unknown" if minutes is None else f"{minutes:.1f} min"
    requested = row["first_requested_at"] is not None
    what = (
        f"{waited} from Phase 4 ready to the first request"
        if requested
        else f"{waited} since Phase 4 was ready and no request sent yet"
    )
    return Observation(
        day, "latency", row["level"], f"Dispatch latency {waited} for {day}",
        f"Dispatch latency for {day}: {what} (> {_int(bound)} min)",
        f"Dispatch latency for {day} is within bounds: {what}",
        f"dispatcher status --game-date {day}" if requested
        else f"dispatcher retry --game-date {day}",
        _figures(row, "phase4_ready_at", "first_requested_at") | {"minutes": minutes},
    )  # fmt: skip


def _sla_missed(day: dt.date, row: Mapping[str, Any]) -> Observation:
    predicted, expected = _int(row["players_predicted"]), _int(row["players_expected"])
    return Observation(
        day, "sla_missed", row["level"], f"SLA missed for {day}",
        f"SLA missed for {day}: {predicted} of {expected} players predicted by the"
        f" deadline ({row['sla_deadline_at']} UTC, 07:00 PT)",
        f"SLA met for {day}: {predicted} of {expected} players predicted",
        f"dispatcher plan --game-date {day}",
        _figures(row, "players_expected", "players_predicted", "sla_deadline_at"),
    )  # fmt: skip


def _publish_failed(day: dt.date, failed: int, attempted: int) -> Observation:
    return Observation(
        day, "publish_failed", "critical" if failed else "ok", f"Publish failed for {day}",
        f"Publish failed for {day}: {failed} of {attempted} prediction requests were not"
        " acknowledged; their claims were released, so they are pending again",
        f"Publishing works again for {day}: {attempted} requests acknowledged",
        f"dispatcher retry --game-date {day}",
        {"requests_failed": failed, "requests_attempted": attempted},
    )  # fmt: skip


_WORDING = {
    "phase4_critical": _phase4_critical,
    "partial_dispatch": _partial_dispatch,
    "coverage": _coverage,
    "latency": _latency,
    "sla_missed": _sla_missed,
}
