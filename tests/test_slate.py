"""The sample-slate generator: its counts are what SQL over the written tables computes."""

from __future__ import annotations

import math
import re
import time
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import duckdb
import pytest

from dispatcher.project import required_systems
from dispatcher.sandbox.load import write_duckdb
from dispatcher.sandbox.slate import FEATURE_NAMES, SlateCounts, SlateSpec, generate_slate
from dispatcher.sandbox.tables import LEDGER_COLUMNS, TABLES, LedgerTableMissing

GAME_DATE = date(2026, 11, 28)
NOW = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)

# The dbt-created ledger, as dbt-duckdb materialises models/orchestration/request_ledger.sql.
LEDGER_DDL = """
create schema if not exists nba_orchestration;
create table nba_orchestration.request_ledger (
    request_id varchar, game_date date, player_lookup varchar, game_id varchar,
    attempt bigint, batch_id varchar, trigger_source varchar,
    claimed_at timestamp, published_at timestamp, message_id varchar
);
"""

# The marts' semantics, written independently of the generator.
PLAYER_STATES_SQL = """
with

context as (
    select * from nba_analytics.upcoming_player_game_context where game_date = $game_date
),

expected as (
    select player_lookup
    from context
    where avg_minutes_per_game_last_7 >= 15
        and (player_status is null or player_status not in ('OUT', 'DOUBTFUL'))
),

features as (
    select player_lookup, bool_or(is_production_ready) as is_production_ready
    from nba_predictions.ml_feature_store_v2
    where game_date = $game_date
    group by player_lookup
),

systems as (
    select player_lookup, count(distinct system_id) as active_systems
    from nba_predictions.player_prop_predictions
    where game_date = $game_date and is_active and system_id in ($systems)
    group by player_lookup
),

leases as (
    select distinct player_lookup
    from nba_orchestration.request_ledger
    where game_date = $game_date
        and coalesce(published_at, claimed_at) > $now - interval 10 minute
),

players as (
    select
        expected.player_lookup,
        features.player_lookup is not null as in_feature_store,
        coalesce(features.is_production_ready, false) as is_ready,
        coalesce(systems.active_systems, 0) = $required as is_predicted,
        coalesce(systems.active_systems, 0) between 1 and $required - 1 as is_partial,
        leases.player_lookup is not null as has_lease
    from expected
    left join features using (player_lookup)
    left join systems using (player_lookup)
    left join leases using (player_lookup)
)

select
    player_lookup,
    in_feature_store,
    is_ready,
    is_partial,
    case
        when is_predicted then 'predicted'
        when has_lease then 'in_flight'
        when is_ready then 'pending'
        else 'not_ready'
    end as state
from players
"""

COUNTS_SQL = f"""
with states as ({PLAYER_STATES_SQL})
select
    (select count(*) from nba_analytics.upcoming_player_game_context
        where game_date = $game_date) as players,
    count(*) as expected,
    count(*) filter (where in_feature_store) as in_feature_store,
    count(*) filter (where is_ready) as ready,
    count(*) filter (where state = 'not_ready') as not_ready,
    count(*) filter (where state = 'predicted') as predicted,
    count(*) filter (where is_ready and is_partial) as partially_predicted,
    count(*) filter (where state = 'in_flight') as in_flight,
    count(*) filter (where state = 'pending') as pending
from states
"""

SQL_COUNT_FIELDS = (
    "players",
    "expected",
    "in_feature_store",
    "ready",
    "not_ready",
    "predicted",
    "partially_predicted",
    "in_flight",
    "pending",
)


def run_sql(con, sql: str, game_date: date, now: datetime):
    required = required_systems()
    systems = ", ".join(f"'{system}'" for system in required)
    params = {"game_date": game_date, "now": now.astimezone(UTC).replace(tzinfo=None)}
    sql = sql.replace("$systems", systems).replace("$required", str(len(required)))
    return con.execute(sql, params)


def sql_counts(con, game_date: date, now: datetime) -> dict[str, int]:
    cursor = run_sql(con, COUNTS_SQL, game_date, now)
    names = [d[0] for d in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


def sql_states(con, game_date: date, now: datetime) -> dict[str, str]:
    rows = run_sql(con, PLAYER_STATES_SQL, game_date, now).fetchall()
    return {row[0]: row[4] for row in rows}


def status_counts(con, game_date: date) -> dict[str, int]:
    row = con.execute(
        """
        select
            count(*) filter (where player_status = 'OUT'),
            count(*) filter (where player_status = 'DOUBTFUL'),
            count(*) filter (where avg_minutes_per_game_last_7 < 15
                and (player_status is null or player_status not in ('OUT', 'DOUBTFUL')))
        from nba_analytics.upcoming_player_game_context
        where game_date = ?
        """,
        [game_date],
    ).fetchone()
    return dict(zip(("out", "doubtful", "below_minutes"), row, strict=True))


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    connection.execute(LEDGER_DDL)
    yield connection
    connection.close()


# --- counts ---------------------------------------------------------------------------


def test_default_spec_counts_by_hand():
    # 450 players: 18 out (4 %), 9 doubtful (2 %), 45 below 15 min (10 %) -> 378 expected;
    # 8 without features (2 % of 378 = 7.56) -> 370; 95 % of 370 = 351.5 -> 352 ready.
    assert SlateSpec(GAME_DATE).counts() == SlateCounts(
        players=450,
        expected=378,
        out=18,
        doubtful=9,
        below_minutes=45,
        in_feature_store=370,
        ready=352,
        not_ready=26,
        predicted=0,
        partially_predicted=0,
        in_flight=0,
        pending=352,
        lease_expired=0,
    )


def test_rounding_is_half_up():
    # 0.05 x 450 = 22.5 -> 23 (banker's rounding would give 22)
    assert SlateSpec(GAME_DATE, share_out=0.05).counts().out == 23


KNOBS = {
    "default": {},
    "mixed": dict(
        share_predicted=0.5,
        share_partially_predicted=0.2,
        share_in_flight=0.3,
        share_lease_expired=0.5,
    ),
    "in_flight_overlaps_partial": dict(
        share_predicted=0.6, share_partially_predicted=0.3, share_in_flight=0.5
    ),
    "all_predicted": dict(share_predicted=1.0, share_in_flight=1.0),
    "nothing_ready": dict(share_production_ready=0.0, share_in_flight=1.0),
    "no_features": dict(share_missing_features=1.0),
    "all_out": dict(share_out=1.0, share_doubtful=0.0, share_below_minutes=0.0),
    "everyone_in_flight": dict(share_in_flight=1.0, share_partially_predicted=0.4),
    "tiny": dict(
        teams=2,
        players_per_team=3,
        share_out=0.2,
        share_below_minutes=0.2,
        share_predicted=0.34,
        share_in_flight=0.5,
    ),
    "half_ready_seed_7": dict(
        teams=10, share_production_ready=0.5, share_predicted=0.25, share_lease_expired=1.0, seed=7
    ),
}


@pytest.mark.parametrize("knobs", KNOBS.values(), ids=KNOBS.keys())
def test_counts_match_sql_over_written_tables(con, knobs):
    spec = SlateSpec(GAME_DATE, now=NOW, **knobs)
    slate = generate_slate(spec)
    write_duckdb(con, slate, include_ledger=True)

    expected = spec.counts()
    assert slate.counts == expected
    assert sql_counts(con, GAME_DATE, NOW) == {
        name: getattr(expected, name) for name in SQL_COUNT_FIELDS
    }
    assert status_counts(con, GAME_DATE) == {
        "out": expected.out,
        "doubtful": expected.doubtful,
        "below_minutes": expected.below_minutes,
    }
    assert expected.missing == expected.expected - expected.predicted - expected.in_flight


@pytest.mark.parametrize("knobs", [KNOBS["mixed"], KNOBS["in_flight_overlaps_partial"]])
def test_player_states_match_sql(con, knobs):
    slate = generate_slate(SlateSpec(GAME_DATE, now=NOW, **knobs))
    write_duckdb(con, slate, include_ledger=True)

    expected_states = {
        player: state
        for player, state in slate.player_states.items()
        if state not in ("out", "doubtful", "below_minutes")
    }
    assert sql_states(con, GAME_DATE, NOW) == expected_states


def test_expired_claims_are_pending_not_in_flight(con):
    spec = SlateSpec(GAME_DATE, now=NOW, share_lease_expired=1.0, share_in_flight=0.1)
    slate = generate_slate(spec)
    write_duckdb(con, slate, include_ledger=True)

    counts = spec.counts()
    unpublished = [row for row in slate.ledger if row["published_at"] is None]
    assert len(unpublished) == counts.lease_expired == counts.pending
    assert len(slate.ledger) == counts.lease_expired + counts.in_flight
    assert sql_counts(con, GAME_DATE, NOW)["pending"] == counts.pending


def test_wall_clock_now_keeps_in_flight_in_flight(con):
    spec = SlateSpec(GAME_DATE, share_in_flight=0.25)
    slate = generate_slate(spec)
    write_duckdb(con, slate, include_ledger=True)

    assert abs(slate.now - datetime.now(UTC)) < timedelta(minutes=1)
    counts = sql_counts(con, GAME_DATE, datetime.now(UTC))
    assert counts["in_flight"] == spec.counts().in_flight > 0


def test_non_expected_players_have_features_but_do_not_count(con):
    slate = generate_slate(SlateSpec(GAME_DATE, now=NOW))
    featured = {row["player_lookup"] for row in slate.features}
    non_expected = {
        p for p, s in slate.player_states.items() if s in ("out", "doubtful", "below_minutes")
    }
    assert non_expected and non_expected <= featured


def test_partial_players_have_an_inactive_fifth_system():
    spec = SlateSpec(GAME_DATE, now=NOW, share_partially_predicted=0.1)
    slate = generate_slate(spec)
    by_player: dict[str, list[dict]] = {}
    for row in slate.predictions:
        by_player.setdefault(row["player_lookup"], []).append(row)

    assert len(by_player) == spec.counts().partially_predicted
    for rows in by_player.values():
        assert sorted(r["system_id"] for r in rows) == sorted(required_systems())
        assert sum(r["is_active"] for r in rows) == len(required_systems()) - 1


def test_ledger_rows_have_opaque_unique_deterministic_request_ids():
    # The request id format is the dbt marts'; the slate's earlier-run rows only need
    # ids that are unique and the same for the same spec.
    spec = SlateSpec(GAME_DATE, now=NOW, share_in_flight=0.2, share_lease_expired=0.5)
    ledger = generate_slate(spec).ledger
    ids = [row["request_id"] for row in ledger]
    assert ledger and len(set(ids)) == len(ids)
    for row in ledger:
        assert str(uuid.UUID(row["request_id"])) == row["request_id"]
        assert row["player_lookup"] not in row["request_id"]
    assert ids == [row["request_id"] for row in generate_slate(spec).ledger]
    other_date = generate_slate(replace(spec, game_date=GAME_DATE + timedelta(days=1))).ledger
    assert not set(ids) & {row["request_id"] for row in other_date}


# --- shape and content ----------------------------------------------------------------


def test_450_players_on_30_teams_in_15_games():
    slate = generate_slate(SlateSpec(GAME_DATE, now=NOW))
    context = slate.context

    assert len(context) == 450
    assert len({row["player_lookup"] for row in context}) == 450
    assert len({row["team_abbr"] for row in context}) == 30
    games = {row["game_id"] for row in context}
    assert len(games) == 15
    for row in context:
        match = re.fullmatch(r"20261128_([A-Z]{3})_([A-Z]{3})", row["game_id"])
        assert match, row["game_id"]
        away, home = match.groups()
        assert row["home_game"] == (row["team_abbr"] == home)
        assert {row["team_abbr"], row["opponent_team_abbr"]} == {away, home}
        assert re.fullmatch(r"[a-z]+[0-9]*", row["player_lookup"])
    per_team: dict[str, int] = {}
    for row in context:
        per_team[row["team_abbr"]] = per_team.get(row["team_abbr"], 0) + 1
    assert set(per_team.values()) == {15}


def test_rows_have_exactly_the_contract_columns_and_utc_timestamps():
    slate = generate_slate(
        SlateSpec(
            GAME_DATE,
            now=NOW,
            share_partially_predicted=0.2,
            share_in_flight=0.2,
            share_lease_expired=0.2,
        )
    )
    for key, table in [*TABLES.items(), ("ledger", None)]:
        columns = set(LEDGER_COLUMNS if table is None else table.column_names)
        rows = slate.rows(key)
        assert rows, key
        for row in rows:
            assert set(row) == columns
            assert row["game_date"] == GAME_DATE
            for value in row.values():
                if isinstance(value, datetime):
                    assert value.utcoffset() == timedelta(0)


def test_content_is_realistic():
    spec = SlateSpec(GAME_DATE, now=NOW, share_predicted=0.5, share_partially_predicted=0.2)
    slate = generate_slate(spec)
    phase4 = datetime(2026, 11, 28, 8, 30, tzinfo=UTC)  # 00:30 PST
    assert slate.phase4_completed_at == phase4

    for row in slate.context:
        assert 5.5 <= row["current_points_line"] <= 35.5
        assert (row["current_points_line"] * 2).is_integer()
        assert 5 <= row["avg_minutes_per_game_last_7"] <= 38
        status, state = row["player_status"], slate.player_states[row["player_lookup"]]
        assert status in (None, "AVAILABLE", "PROBABLE", "QUESTIONABLE", "OUT", "DOUBTFUL")
        assert (status in ("OUT", "DOUBTFUL")) == (state in ("out", "doubtful"))
        assert row["processed_at"] < phase4
    minutes = [row["avg_minutes_per_game_last_7"] for row in slate.context]
    assert 15.0 in minutes and 14.9 in minutes  # both sides of the threshold

    for row in slate.features:
        assert len(row["features"]) == row["feature_count"] == 25
        assert row["feature_names"] == list(FEATURE_NAMES)
        assert all(isinstance(v, float) and math.isfinite(v) for v in row["features"])
        assert 60 <= row["feature_quality_score"] <= 100
        assert row["feature_version"] == "v2_25features"
        assert row["created_at"] <= phase4
    assert max(row["created_at"] for row in slate.features) == phase4

    for row in slate.predictions:
        edge = row["predicted_points"] - row["current_points_line"]
        expected = "OVER" if edge >= 1 else "UNDER" if edge <= -1 else "PASS"
        assert row["recommendation"] == expected
        assert abs(edge) < 20
        if row["is_active"]:
            assert row["created_at"] > phase4
    assert {row["recommendation"] for row in slate.predictions} == {"OVER", "UNDER", "PASS"}
    assert len({row["prediction_id"] for row in slate.predictions}) == len(slate.predictions)


def test_phase4_in_one_write_stamps_every_feature_row_and_changes_nothing_else():
    spread = generate_slate(SlateSpec(GAME_DATE, now=NOW))
    at_once = generate_slate(SlateSpec(GAME_DATE, now=NOW, phase4_in_one_write=True))
    phase4 = at_once.phase4_completed_at
    assert {(r["created_at"], r["updated_at"]) for r in at_once.features} == {(phase4, phase4)}
    assert len({r["updated_at"] for r in spread.features}) > 100  # the default spreads them

    def unstamped(slate):
        return [{k: v for k, v in r.items() if not k.endswith("ed_at")} for r in slate.features]

    assert unstamped(at_once) == unstamped(spread)
    assert at_once.context == spread.context and at_once.player_states == spread.player_states


def test_phase4_default_follows_pacific_daylight_time():
    summer = generate_slate(SlateSpec(date(2026, 6, 10), now=NOW))
    assert summer.phase4_completed_at == datetime(2026, 6, 10, 7, 30, tzinfo=UTC)


# --- determinism ----------------------------------------------------------------------


def test_same_seed_same_rows():
    spec = SlateSpec(
        GAME_DATE, now=NOW, share_predicted=0.3, share_partially_predicted=0.1, share_in_flight=0.2
    )
    first, second = generate_slate(spec), generate_slate(spec)
    for key in ("context", "features", "predictions", "ledger"):
        assert first.rows(key) == second.rows(key)
    assert first.player_states == second.player_states

    other = generate_slate(replace(spec, seed=1))
    assert other.context != first.context


def test_roster_is_stable_across_dates():
    def teams_players(game_date):
        rows = generate_slate(SlateSpec(game_date, now=NOW)).context
        return {(row["team_abbr"], row["player_lookup"]) for row in rows}

    assert teams_players(GAME_DATE) == teams_players(GAME_DATE + timedelta(days=1))


# --- writing --------------------------------------------------------------------------


def test_rewriting_a_date_replaces_that_date_only(con):
    next_day = GAME_DATE + timedelta(days=1)
    write_duckdb(con, generate_slate(SlateSpec(GAME_DATE, now=NOW)), include_ledger=True)
    other_spec = SlateSpec(next_day, now=NOW, share_predicted=0.5, share_in_flight=0.5)
    write_duckdb(con, generate_slate(other_spec), include_ledger=True)
    other_before = sql_counts(con, next_day, NOW)

    new_spec = SlateSpec(GAME_DATE, now=NOW, teams=4, share_predicted=0.5, share_in_flight=0.4)
    write_duckdb(con, generate_slate(new_spec), include_ledger=True)
    write_duckdb(con, generate_slate(new_spec), include_ledger=True)

    new = new_spec.counts()
    assert sql_counts(con, GAME_DATE, NOW) == {n: getattr(new, n) for n in SQL_COUNT_FIELDS}
    assert sql_counts(con, next_day, NOW) == other_before
    assert other_before["players"] == 450


def test_several_slates_in_one_write(tmp_path):
    path = tmp_path / "history.duckdb"
    specs = [SlateSpec(GAME_DATE + timedelta(days=d), now=NOW, seed=d) for d in range(3)]
    written = write_duckdb(path, (generate_slate(spec) for spec in specs))

    assert written["context"] == 3 * 450
    with duckdb.connect(str(path)) as check:
        per_date = check.execute(
            "select game_date, count(*) from nba_analytics.upcoming_player_game_context "
            "group by 1 order by 1"
        ).fetchall()
    assert per_date == [(spec.game_date, 450) for spec in specs]


def test_same_date_twice_in_one_write_is_refused(tmp_path):
    slate = generate_slate(SlateSpec(GAME_DATE, now=NOW))
    with pytest.raises(ValueError, match="two slates"):
        write_duckdb(tmp_path / "w.duckdb", [slate, slate])


def test_include_ledger_without_the_table_writes_nothing(tmp_path):
    slate = generate_slate(SlateSpec(GAME_DATE, now=NOW, share_in_flight=0.1))
    with duckdb.connect(str(tmp_path / "bare.duckdb")) as bare:
        with pytest.raises(LedgerTableMissing, match="dbt build"):
            write_duckdb(bare, slate, include_ledger=True)
        tables = bare.execute("select count(*) from information_schema.tables").fetchone()[0]
    assert tables == 0


def test_ledger_table_missing_columns_is_reported(tmp_path):
    slate = generate_slate(SlateSpec(GAME_DATE, now=NOW, share_in_flight=0.1))
    with duckdb.connect(str(tmp_path / "old.duckdb")) as old:
        old.execute(
            "create schema nba_orchestration; create table nba_orchestration.request_ledger "
            "(request_id varchar, game_date date, player_lookup varchar)"
        )
        with pytest.raises(LedgerTableMissing, match="attempt"):
            write_duckdb(old, slate, include_ledger=True)


def test_stored_types_compare_cleanly(con):
    write_duckdb(con, generate_slate(SlateSpec(GAME_DATE, now=NOW)))
    types = dict(
        con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_name = 'ml_feature_store_v2'"
        ).fetchall()
    )
    assert types["features"] == "DOUBLE[]"
    assert types["feature_names"] == "VARCHAR[]"
    assert types["created_at"] == "TIMESTAMP"
    at_edge = con.execute(
        "select count(*) filter (where avg_minutes_per_game_last_7 = 15), "
        "count(*) filter (where avg_minutes_per_game_last_7 = 14.9) "
        "from nba_analytics.upcoming_player_game_context"
    ).fetchone()
    assert min(at_edge) >= 1
    phase4 = con.execute(
        "select max(created_at) from nba_predictions.ml_feature_store_v2 where game_date = ?",
        [GAME_DATE],
    ).fetchone()[0]
    assert phase4 == datetime(2026, 11, 28, 8, 30)  # naive UTC


def test_writing_450_players_takes_well_under_a_second(tmp_path):
    slate = generate_slate(SlateSpec(GAME_DATE, now=NOW, share_predicted=0.5))
    write_duckdb(tmp_path / "warm-up.duckdb", slate)  # loads DuckDB's JSON reader once

    started = time.perf_counter()
    write_duckdb(tmp_path / "timed.duckdb", slate)
    assert time.perf_counter() - started < 1.0


# --- validation -----------------------------------------------------------------------

INVALID = {
    "odd teams": (dict(teams=5), "teams must be even"),
    "no teams": (dict(teams=0), "teams must be even"),
    "too many teams": (dict(teams=32), "between 2 and 30"),
    "float teams": (dict(teams=2.0), "teams must be an integer"),
    "no players": (dict(players_per_team=0), "players_per_team"),
    "negative share": (dict(share_out=-0.1), r"share_out must be a number in \[0, 1\]"),
    "share above one": (dict(share_predicted=1.5), "share_predicted"),
    "nan share": (dict(share_in_flight=float("nan")), "share_in_flight"),
    "bool share": (dict(share_doubtful=True), "share_doubtful"),
    "text share": (dict(share_below_minutes="0.1"), "share_below_minutes"),
    "non-expected over 100%": (
        dict(share_out=0.6, share_doubtful=0.3, share_below_minutes=0.2),
        "exceed all players",
    ),
    "predicted over ready": (
        dict(share_predicted=0.7, share_partially_predicted=0.4),
        "exceed the ready players",
    ),
    "naive now": (dict(now=datetime(2026, 11, 28, 14, 0)), "now must be timezone-aware"),
    "naive phase4": (
        dict(phase4_completed_at=datetime(2026, 11, 28, 8, 30)),
        "phase4_completed_at must be timezone-aware",
    ),
}


@pytest.mark.parametrize("knobs, message", INVALID.values(), ids=INVALID.keys())
def test_invalid_specs_are_refused(knobs, message):
    with pytest.raises(ValueError, match=message):
        SlateSpec(GAME_DATE, **knobs)


@pytest.mark.parametrize("game_date", [datetime(2026, 11, 28), "2026-11-28", None])
def test_game_date_must_be_a_date(game_date):
    with pytest.raises(ValueError, match="game_date must be a date"):
        SlateSpec(game_date)
