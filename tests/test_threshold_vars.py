"""Every threshold var of dbt_project.yml can be overridden with --vars: the build
passes (unit tests included, since they pin the vars they assume), and the marts and
the dispatcher then follow the overridden value, not the default.

One DuckDB template holds a small slate per check (one game date each) and is built
with the default vars; each group of vars that do not touch each other's dates is
built once on a copy with its overrides. A check compares its date in the default
build with the overridden one, and runs the dispatcher where the var decides an
outcome. "Now" (var as_of) is pinned to the moment the template is made, so the
dispatcher's own claims, made later, hold their leases.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dispatcher import dbt, ledger
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher
from dispatcher.project import dbt_vars
from dispatcher.sandbox.load import write_duckdb
from dispatcher.sandbox.slate import Slate, SlateSpec, generate_slate
from dispatcher.warehouse import connect

FILE_NAME = "warehouse.duckdb"  # a copy keeps it: dbt-duckdb's views name the database after it

#: The overrides, in groups built together: no var of a group changes a date another
#: var of the group is checked on.
GROUPS: dict[str, dict[str, Any]] = {
    "expected_set": {"min_minutes": 25, "excluded_player_statuses": ["OUT"]},
    "readiness_and_coverage": {
        "ready_pct_threshold": 50,
        "ready_count_threshold": 70,
        "missing_warning_pct": 15,
        "missing_warning_count": 50,
        "coverage_warning_pct": 60,
        "coverage_critical_pct": 30,
        "sla_timezone": "America/New_York",
        "success_coverage_pct": 70,
        "claim_lease_seconds": 3 * 3600,
    },
    "critical_lease_systems_latency": {
        "critical_ready_count": 80,
        "request_lease_minutes": 180,
        "required_systems": ["moving_average", "zone_matchup_v1"],
        "latency_warning_minutes": 50,
        "latency_critical_minutes": 1000,
        "sla_local_time": "09:30:00",
        "success_latency_minutes": 45,
    },
}
GROUP_OF = {var: group for group, overrides in GROUPS.items() for var in overrides}
#: Vars that are not thresholds: the clock and the readiness gate's date.
NOT_THRESHOLDS = {"as_of", "game_date"}


def _day(n: int) -> dt.date:
    """December 2026: Pacific standard time, so 07:00 PT is 15:00 UTC."""
    return dt.date(2026, 12, n)


def _specs(now: dt.datetime) -> dict[str, SlateSpec]:
    """One slate per check, named by the var it is for. Counts in the comments are
    SlateSpec.counts() with the defaults (15 minutes, OUT/DOUBTFUL, 95 % ready...)."""
    la_morning = dt.datetime(2026, 12, 14, 16, 0, tzinfo=dt.UTC)  # 08:00 PT
    full = {"share_missing_features": 0.0, "share_production_ready": 1.0}
    return {
        "min_minutes": SlateSpec(game_date=_day(8), seed=21, now=now),
        "excluded_player_statuses": SlateSpec(game_date=_day(9), seed=22, now=now),
        # 62 of 126 ready: not ready, not critical (>= 50); critical under 80.
        "critical_ready_count": SlateSpec(
            game_date=_day(1), teams=10, share_production_ready=0.5, seed=11, now=now
        ),
        # 61 of 101 ready (60 %): ready at 50 %, not by a count of 70.
        "ready_pct_threshold": SlateSpec(
            game_date=_day(2), teams=8, share_production_ready=0.62, seed=12, now=now
        ),
        # 74 of 378 ready (20 %): ready by a count of 70, not at 50 %.
        "ready_count_threshold": SlateSpec(
            game_date=_day(3), share_production_ready=0.2, seed=13, now=now
        ),
        # After a dispatch 9 of 75 missing (12 %): above 5 %, under 15 %, under 20 players.
        "missing_warning_pct": SlateSpec(
            game_date=_day(4),
            teams=6,
            share_missing_features=0.0,
            share_production_ready=0.88,
            seed=14,
            now=now,
        ),
        # After a dispatch 38 of 378 missing (10 %): above 20 players, under 50 and 15 %.
        "missing_warning_count": SlateSpec(
            game_date=_day(5), share_production_ready=0.92, seed=15, now=now
        ),
        # 36 of 51 predicted (71 %): warning under 90 %, ok at 60 %.
        "coverage_warning_pct": SlateSpec(
            game_date=_day(6), teams=4, share_predicted=0.7, seed=16, now=now, **full
        ),
        # 20 of 51 predicted (39 %): critical under 50 %, warning at 30 %.
        "coverage_critical_pct": SlateSpec(
            game_date=_day(7), teams=4, share_predicted=0.4, seed=17, now=now, **full
        ),
        # Requests published 32 minutes ago (expired at 10 minutes, not at 180) and
        # claims never confirmed, 2 hours old (expired at the claim lease either way).
        "request_lease_minutes": SlateSpec(
            game_date=_day(10),
            share_in_flight=0.2,
            share_lease_expired=0.3,
            seed=18,
            now=now - dt.timedelta(minutes=30),
        ),  # fmt: skip
        # Claims never confirmed, 2 hours old: expired at 60 seconds, not at 3 hours.
        "claim_lease_seconds": SlateSpec(
            game_date=_day(19), share_lease_expired=0.3, seed=28, now=now
        ),
        # Players with 4 of 5 systems: predicted when fewer systems are required.
        "required_systems": SlateSpec(
            game_date=_day(11),
            share_predicted=0.2,
            share_partially_predicted=0.4,
            seed=19,
            now=now,
        ),
        # Everyone predicted 08:03-08:43 PT: after 07:00, before 09:30.
        "sla_local_time": SlateSpec(
            game_date=_day(14),
            teams=4,
            share_predicted=1.0,
            phase4_completed_at=la_morning,
            seed=20,
            now=now,
            **full,
        ),
        "sla_timezone": SlateSpec(game_date=_day(12), teams=4, seed=23, now=now),
        # Phase 4 ready 30-45 minutes before now, nothing requested yet.
        "latency_warning_minutes": SlateSpec(
            game_date=_day(15),
            teams=8,
            phase4_completed_at=now - dt.timedelta(minutes=30),
            seed=24,
            now=now,
            **full,
        ),
        # Phase 4 ready about 5 hours before now, nothing requested yet.
        "latency_critical_minutes": SlateSpec(
            game_date=_day(16),
            teams=8,
            phase4_completed_at=now - dt.timedelta(hours=5),
            seed=25,
            now=now,
            **full,
        ),
        # 37 of 51 predicted (73 %): a success day's coverage at 70 %, not at 95 %.
        "success_coverage_pct": SlateSpec(
            game_date=_day(17), teams=4, share_predicted=0.72, seed=26, now=now, **full
        ),
        # 97 of 101 predicted, the rest requested 2 minutes before now, Phase 4 ready
        # 28-43 minutes before that: a success day at 45 minutes, not at 10.
        "success_latency_minutes": SlateSpec(
            game_date=_day(18),
            teams=8,
            share_predicted=0.96,
            share_in_flight=1.0,
            phase4_completed_at=now - dt.timedelta(minutes=30),
            seed=27,
            now=now,
            **full,
        ),
    }


# --- warehouses -----------------------------------------------------------------------


@dataclass
class Template:
    path: Path
    as_of: str
    slates: dict[str, Slate]


@dataclass
class Build:
    """One group's overridden warehouse and the dbt result that built it."""

    settings: Settings
    overrides: dict[str, Any]
    result: dbt.DbtResult


def _settings(directory: Path) -> Settings:
    return Settings(duckdb_path=directory / FILE_NAME, dbt_target_path=directory / "target")


def _copy(path: Path, directory: Path) -> Settings:
    """Settings of a private copy of a built warehouse file."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, directory / FILE_NAME)
    return _settings(directory)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Template:
    """Every slate, the models built with the default vars, then the slates' requests."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    as_of = now.strftime("%Y-%m-%d %H:%M:%S")
    slates = {var: generate_slate(spec) for var, spec in _specs(now).items()}
    settings = _settings(tmp_path_factory.mktemp("thresholds-default"))
    write_duckdb(settings.duckdb_path, list(slates.values()))
    dbt.build(settings, vars={"as_of": as_of})
    write_duckdb(settings.duckdb_path, list(slates.values()), include_ledger=True)
    return Template(path=settings.duckdb_path, as_of=as_of, slates=slates)


@pytest.fixture(scope="module")
def default(template) -> Settings:
    """The default build, read only (a check that dispatches copies it first)."""
    return _settings(template.path.parent)


@pytest.fixture(scope="module")
def builds(template, tmp_path_factory) -> Callable[[str], Build]:
    """The overridden build of a group, made on first use."""
    made: dict[str, Build] = {}

    def build(group: str) -> Build:
        if group not in made:
            settings = _copy(template.path, tmp_path_factory.mktemp(f"thresholds-{group}"))
            overrides = GROUPS[group]
            result = dbt.run_dbt(
                settings, ["build"], vars={"as_of": template.as_of, **overrides}, check=False
            )
            made[group] = Build(settings=settings, overrides=overrides, result=result)
        return made[group]

    return build


@dataclass
class Check:
    var: str
    value: Any
    date: dt.date
    slate: Slate
    default: Settings
    over: Settings
    scratch: Path

    def default_copy(self) -> Settings:
        """A private copy of the default build, for a dispatcher run to contrast with."""
        return _copy(self.default.duckdb_path, self.scratch / "default")


def _query(settings: Settings, sql: str, **params: Any) -> list[dict[str, Any]]:
    wh = connect(settings)
    try:
        return wh.query(sql, params)
    finally:
        wh.close()


def _one(settings: Settings, mart: str, game_date: dt.date) -> dict[str, Any]:
    rows = _query(
        settings, f"select * from nba_orchestration.{mart} where game_date = @d", d=game_date
    )
    assert len(rows) == 1, (mart, game_date, rows)
    return rows[0]


def _players(settings: Settings, game_date: dt.date, mart="fct_player_dispatch_state") -> dict:
    rows = _query(
        settings, f"select * from nba_orchestration.{mart} where game_date = @d", d=game_date
    )
    return {row["player_lookup"]: row for row in rows}


def _batch(settings: Settings, game_date: dt.date, batch_id: str | None) -> set[str]:
    """Players whose request the batch published."""
    wh = connect(settings)
    try:
        rows = ledger.requests(wh, game_date)
    finally:
        wh.close()
    return {r["player_lookup"] for r in rows if r["batch_id"] == batch_id and r["published_at"]}


def _slate_expected(slate: Slate, min_minutes: float, excluded: list[str]) -> set[str]:
    return {
        row["player_lookup"]
        for row in slate.context
        if (row["player_status"] or "") not in excluded
        and row["avg_minutes_per_game_last_7"] is not None
        and row["avg_minutes_per_game_last_7"] >= min_minutes
    }


def _slate_ready(slate: Slate) -> set[str]:
    return {row["player_lookup"] for row in slate.features if row["is_production_ready"]}


def _alert_rules(result) -> list[str]:
    return [alert["rule"] for alert in result.alerts]


# --- the checks, one per var ------------------------------------------------------------


def check_min_minutes(c: Check) -> None:
    expected = _slate_expected(c.slate, c.value, ["OUT"])
    between = {
        row["player_lookup"]
        for row in c.slate.context
        if row["player_status"] not in ("OUT", "DOUBTFUL")
        and 15 <= row["avg_minutes_per_game_last_7"] < c.value
    }
    assert between and not between & expected
    assert between <= set(_players(c.default, c.date))  # expected at the default 15
    assert not between & set(_players(c.over, c.date))
    reasons = _query(
        c.over,
        "select player_lookup, filter_reason from nba_orchestration.int_slate_players"
        " where game_date = @d",
        d=c.date,
    )
    assert {r["filter_reason"] for r in reasons if r["player_lookup"] in between} == {
        f"below {c.value} minutes per game"
    }
    assert _one(c.over, "fct_phase4_readiness", c.date)["players_expected"] == len(expected)

    result = Dispatcher(c.over).trigger(c.date)
    assert (result.outcome, result.players_expected) == ("dispatched", len(expected))
    published = _batch(c.over, c.date, result.batch_id)
    assert published == expected & _slate_ready(c.slate)
    assert result.requests_published == len(published)


def check_excluded_player_statuses(c: Check) -> None:
    status = {row["player_lookup"]: row["player_status"] for row in c.slate.context}
    expected = _slate_expected(c.slate, GROUPS["expected_set"]["min_minutes"], c.value)
    doubtful = {player for player in expected if status[player] == "DOUBTFUL"}
    out = {player for player, s in status.items() if s == "OUT"}
    assert doubtful and out
    assert not doubtful & set(_players(c.default, c.date))
    over = _players(c.over, c.date)
    assert doubtful <= set(over) and not out & set(over)
    assert {over[player]["state"] for player in doubtful} == {"pending"}

    result = Dispatcher(c.over).trigger(c.date)
    assert result.outcome == "dispatched"
    assert doubtful <= _batch(c.over, c.date, result.batch_id)


def check_critical_ready_count(c: Check) -> None:
    assert _one(c.default, "fct_phase4_readiness", c.date)["is_critical"] is False
    readiness = _one(c.over, "fct_phase4_readiness", c.date)
    ready = readiness["players_ready"]
    assert 50 <= ready < c.value
    assert (readiness["is_critical"], readiness["critical_ready_count"]) == (True, c.value)
    coverage = _one(c.over, "fct_prediction_coverage", c.date)
    assert (coverage["is_phase4_critical"], coverage["critical_ready_count"]) == (True, c.value)

    before = _query(c.over, "select * from nba_orchestration.request_ledger")
    result = Dispatcher(c.over).trigger(c.date)
    assert (result.outcome, result.exit_code, result.requests_published) == ("critical", 3, 0)
    assert _query(c.over, "select * from nba_orchestration.request_ledger") == before
    assert _alert_rules(result) == ["phase4_critical"]
    assert f"{ready} players ready (< {c.value})" in result.alerts[0]["message"]

    contrast = Dispatcher(c.default_copy()).trigger(c.date)
    assert contrast.outcome == "partial" and contrast.requests_published == ready


def _check_ready_by(c: Check, by_pct: bool) -> None:
    assert _one(c.default, "fct_phase4_readiness", c.date)["is_ready"] is False
    readiness = _one(c.over, "fct_phase4_readiness", c.date)
    assert readiness["is_ready"] is True
    assert readiness["is_critical"] is False
    by_count = readiness["players_ready"] >= GROUPS[GROUP_OF[c.var]]["ready_count_threshold"]
    pct_ok = readiness["ready_pct"] >= GROUPS[GROUP_OF[c.var]]["ready_pct_threshold"]
    assert (pct_ok, by_count) == ((True, False) if by_pct else (False, True))
    column = "ready_pct_threshold" if by_pct else "ready_count_threshold"
    assert readiness[column] == c.value
    assert _one(c.over, "fct_prediction_coverage", c.date)["is_phase4_ready"] is True

    pending = len(_players(c.over, c.date, "fct_pending_players"))
    result = Dispatcher(c.over).trigger(c.date)
    assert (result.outcome, result.exit_code) == ("dispatched", 0)
    assert result.requests_published == pending > 0
    assert Dispatcher(c.default_copy()).trigger(c.date).outcome == "partial"


def check_ready_pct_threshold(c: Check) -> None:
    _check_ready_by(c, by_pct=True)


def check_ready_count_threshold(c: Check) -> None:
    _check_ready_by(c, by_pct=False)


def check_request_lease_minutes(c: Check) -> None:
    published = {row["player_lookup"] for row in c.slate.ledger if row["published_at"]}
    unconfirmed = {row["player_lookup"] for row in c.slate.ledger if not row["published_at"]}
    assert published and unconfirmed
    default, over = _players(c.default, c.date), _players(c.over, c.date)
    assert {default[p]["state"] for p in published} == {"pending"}
    assert {over[p]["state"] for p in published} == {"in_flight"}
    # The claim lease, not this one, decides the claims nobody confirmed.
    assert {default[p]["state"] for p in unconfirmed} == {over[p]["state"] for p in unconfirmed}
    assert {over[p]["state"] for p in unconfirmed} == {"pending"}
    for player in published:
        published_at = over[player]["last_requested_at"]
        assert over[player]["lease_expires_at"] == published_at + dt.timedelta(minutes=c.value)
        assert default[player]["lease_expires_at"] == published_at + dt.timedelta(minutes=10)

    result = Dispatcher(c.over).trigger(c.date)
    requested = _batch(c.over, c.date, result.batch_id)
    assert result.requests_published == len(requested) == c.slate.counts.pending
    assert not requested & published and unconfirmed <= requested


def check_claim_lease_seconds(c: Check) -> None:
    unconfirmed = {row["player_lookup"] for row in c.slate.ledger if not row["published_at"]}
    assert unconfirmed
    default, over = _players(c.default, c.date), _players(c.over, c.date)
    assert {default[p]["state"] for p in unconfirmed} == {"pending"}
    assert {over[p]["state"] for p in unconfirmed} == {"in_flight"}
    for player in unconfirmed:
        claimed_at = over[player]["last_requested_at"]
        assert over[player]["lease_expires_at"] == claimed_at + dt.timedelta(seconds=c.value)
        assert default[player]["lease_expires_at"] == claimed_at + dt.timedelta(seconds=60)
    coverage = _one(c.over, "fct_prediction_coverage", c.date)
    assert coverage["players_claimed"] == len(unconfirmed)

    result = Dispatcher(c.over).trigger(c.date)
    requested = _batch(c.over, c.date, result.batch_id)
    counts = c.slate.counts
    assert result.requests_published == len(requested) == counts.pending - counts.lease_expired
    assert not requested & unconfirmed
    # Once the rest is requested, the live claims make the next trigger `in_progress`.
    again = Dispatcher(c.over).trigger(c.date)
    assert (again.outcome, again.players_claimed) == ("in_progress", len(unconfirmed))


def check_required_systems(c: Check) -> None:
    active: dict[str, set[str]] = {}
    for row in c.slate.predictions:
        if row["is_active"]:
            active.setdefault(row["player_lookup"], set()).add(row["system_id"])
    predicted = {p for p, systems in active.items() if set(c.value) <= systems}
    assert len(predicted) > c.slate.counts.predicted  # some partial players count now

    default, over = _players(c.default, c.date), _players(c.over, c.date)
    assert sum(row["state"] == "predicted" for row in default.values()) == (
        c.slate.counts.predicted
    )
    assert {p for p, row in over.items() if row["state"] == "predicted"} == predicted
    assert {over[p]["reason"] for p in predicted} == {f"all {len(c.value)} systems predicted"}
    assert _one(c.over, "fct_prediction_coverage", c.date)["players_predicted"] == len(predicted)

    ready = {p for p, state in c.slate.player_states.items() if state != "not_ready"} & set(over)
    result = Dispatcher(c.over).trigger(c.date)
    assert _batch(c.over, c.date, result.batch_id) == ready - predicted
    assert result.players_predicted == len(predicted)


def _check_missing_warning(c: Check, missing_range: tuple[int, int]) -> None:
    result = Dispatcher(c.over).trigger(c.date)
    assert result.outcome == "dispatched" and result.requests_published > 0
    assert "partial_dispatch" not in _alert_rules(result)
    coverage = _one(c.over, "fct_prediction_coverage", c.date)
    low, high = missing_range
    assert low < coverage["players_missing"] <= high
    assert coverage["is_missing_warning"] is False
    assert coverage[c.var] == c.value

    contrast = Dispatcher(c.default_copy()).trigger(c.date)
    assert "partial_dispatch" in _alert_rules(contrast)


def check_missing_warning_pct(c: Check) -> None:
    expected = c.slate.counts.expected
    # more than 5 % (the default warns), at most 15 %, and under the count of 20
    _check_missing_warning(c, (expected * 5 // 100, min(expected * c.value // 100, 20)))


def check_missing_warning_count(c: Check) -> None:
    expected = c.slate.counts.expected
    assert 20 * 100 < 15 * expected  # over 20 players is under 15 %: the count decides
    _check_missing_warning(c, (20, c.value))


def _check_coverage(c: Check, default_level: str, over_level: str) -> None:
    assert _one(c.default, "fct_prediction_coverage", c.date)["alert_level"] == default_level
    coverage = _one(c.over, "fct_prediction_coverage", c.date)
    assert (coverage["alert_level"], coverage[c.var]) == (over_level, c.value)

    result = Dispatcher(c.over).status(c.date)
    assert (result.outcome, result.exit_code) == (
        ("ok", 0) if over_level == "ok" else ("sla_breach", 4)
    )
    assert [alert["level"] for alert in result.alerts] == (
        [] if over_level == "ok" else [over_level]
    )
    contrast = Dispatcher(c.default_copy()).status(c.date)
    assert [alert["level"] for alert in contrast.alerts] == [default_level]


def check_coverage_warning_pct(c: Check) -> None:
    _check_coverage(c, "warning", "ok")


def check_coverage_critical_pct(c: Check) -> None:
    _check_coverage(c, "critical", "warning")


def _check_latency(c: Check, default_level: str, over_level: str) -> None:
    default = _one(c.default, "fct_dispatch_latency", c.date)
    assert default["latency_alert_level"] == default_level
    latency = _one(c.over, "fct_dispatch_latency", c.date)
    assert (latency["latency_alert_level"], latency[c.var]) == (over_level, c.value)
    assert latency["phase4_ready_at"] is not None and latency["first_requested_at"] is None


def check_latency_warning_minutes(c: Check) -> None:
    _check_latency(c, "warning", "ok")


def check_latency_critical_minutes(c: Check) -> None:
    _check_latency(c, "critical", "warning")


def check_sla_local_time(c: Check) -> None:
    default = _one(c.default, "fct_dispatch_latency", c.date)
    over = _one(c.over, "fct_dispatch_latency", c.date)
    assert default["sla_deadline_at"] == dt.datetime(2026, 12, 14, 15, 0)  # 07:00 PST
    assert over["sla_deadline_at"] == dt.datetime(2026, 12, 14, 17, 30)  # 09:30 PST
    assert default["is_sla_met"] is False
    assert over["is_sla_met"] is True
    assert default["sla_deadline_at"] < over["last_predicted_at"] <= over["sla_deadline_at"]


def check_sla_timezone(c: Check) -> None:
    assert _one(c.default, "fct_dispatch_latency", c.date)["sla_deadline_at"] == (
        dt.datetime(2026, 12, 12, 15, 0)  # 07:00 in Los Angeles
    )
    assert _one(c.over, "fct_dispatch_latency", c.date)["sla_deadline_at"] == (
        dt.datetime(2026, 12, 12, 12, 0)  # 07:00 in New York
    )


def check_success_coverage_pct(c: Check) -> None:
    default = _one(c.default, "fct_dispatch_daily", c.date)
    over = _one(c.over, "fct_dispatch_daily", c.date)
    assert c.value <= over["coverage_pct"] < default["success_coverage_pct"]
    assert (default["is_coverage_met"], over["is_coverage_met"]) == (False, True)
    assert over["success_coverage_pct"] == c.value
    assert over["is_success"] is over["is_latency_met"]


def check_success_latency_minutes(c: Check) -> None:
    default = _one(c.default, "fct_dispatch_daily", c.date)
    over = _one(c.over, "fct_dispatch_daily", c.date)
    assert default["success_latency_minutes"] < over["minutes_to_first_request"] <= c.value
    assert (default["is_latency_met"], over["is_latency_met"]) == (False, True)
    assert (default["is_success"], over["is_success"]) == (False, True)
    assert over["success_latency_minutes"] == c.value


CHECKS: dict[str, Callable[[Check], None]] = {
    name.removeprefix("check_"): function
    for name, function in globals().items()
    if name.startswith("check_")
}


# --- tests ------------------------------------------------------------------------------


def test_every_threshold_var_has_a_check_and_an_override():
    thresholds = set(dbt_vars()) - NOT_THRESHOLDS
    assert set(CHECKS) == thresholds == set(GROUP_OF)
    assert set(_specs(dt.datetime.now(dt.UTC))) == thresholds
    for var, group in GROUP_OF.items():
        assert GROUPS[group][var] != dbt_vars()[var], var


@pytest.mark.parametrize("var", sorted(CHECKS))
def test_threshold_override(var, template, default, builds, tmp_path):
    build = builds(GROUP_OF[var])
    # The build with the overrides passed, unit tests included.
    assert build.result.success, build.result.failures()
    units = [status for uid, status in build.result.statuses if uid.startswith("unit_test.")]
    assert units and set(units) == {"pass"}
    slate = template.slates[var]
    CHECKS[var](
        Check(
            var=var,
            value=build.overrides[var],
            date=slate.game_date,
            slate=slate,
            default=default,
            over=build.settings,
            scratch=tmp_path,
        )
    )
