"""The reference Phase 5 worker: the five systems, the local outbox and Pub/Sub sources,
idempotent writes on DuckDB and on the BigQuery emulator."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid

import pytest
from warehouses import build_template, copy_of

from dispatcher import marts
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher, request_message
from dispatcher.project import required_systems
from dispatcher.sandbox import predict, systems
from dispatcher.sandbox.load import write_bigquery
from dispatcher.sandbox.predict import (
    Delivery,
    MalformedRequest,
    MissingSystem,
    parse_request,
    prediction_rows,
    process_batch,
    required_implementations,
    write_predictions,
)
from dispatcher.sandbox.slate import FEATURE_NAMES, SlateSpec, generate_slate
from dispatcher.sandbox.worker import WorkerError, run_worker
from dispatcher.warehouse import connect

GAME_DATE = dt.date(2026, 11, 29)
SPEC = SlateSpec(game_date=GAME_DATE, share_predicted=0.3, share_partially_predicted=0.1, seed=21)
OUTBOX = "nba_orchestration.request_outbox"
PREDICTIONS = "nba_predictions.player_prop_predictions"


# -- the systems --------------------------------------------------------------------------


def _features(seed: int = 0) -> dict[str, float]:
    slate = generate_slate(SlateSpec(game_date=GAME_DATE, teams=2, players_per_team=3, seed=seed))
    row = slate.features[0]
    return dict(zip(row["feature_names"], row["features"], strict=True))


def test_every_required_system_has_an_implementation():
    required = required_systems()
    assert required and set(required) <= set(systems.SYSTEMS)
    assert list(required_implementations()) == list(required)


def _request():
    body = {"player_lookup": "x", "game_date": "2026-11-29", "game_id": "g", "line_values": [20.5]}
    return parse_request(json.dumps(body))


def test_the_worker_predicts_exactly_the_required_systems(monkeypatch):
    monkeypatch.setattr(predict, "required_systems", lambda: ("xgboost_v1", "moving_average"))
    rows = prediction_rows(_request(), "g", _features())
    assert [row["system_id"] for row in rows] == ["xgboost_v1", "moving_average"]


def test_a_required_system_without_an_implementation_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(predict, "required_systems", lambda: ("moving_average", "neural_v9"))
    with pytest.raises(MissingSystem, match="neural_v9"):
        prediction_rows(_request(), "g", _features())
    # The worker refuses to start: no message is taken off the source.
    with pytest.raises(WorkerError, match="required_systems names neural_v9"):
        run_worker(Settings(duckdb_path=tmp_path / "w.duckdb"), source="local", max_messages=1)
    assert not (tmp_path / "w.duckdb").exists()


def test_systems_are_deterministic_pure_functions():
    features = _features(3)
    snapshot = dict(features)
    first = systems.predict(features, 18.5)
    assert systems.predict(features, 18.5) == first
    assert systems.predict(dict(reversed(list(features.items()))), 18.5) == first
    assert features == snapshot


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("line", [0.0, 5.5, 22.5, 35.5, 80.0])
def test_systems_stay_in_range(seed, line):
    for system_id, (points, confidence, call) in systems.predict(_features(seed), line).items():
        assert 0 <= points <= systems.MAX_POINTS, system_id
        assert 0 <= confidence <= 100, system_id
        assert call in ("OVER", "UNDER", "PASS")
        assert round(points, 2) == points and round(confidence, 2) == confidence


def test_systems_survive_missing_and_broken_features():
    for features in ({}, {name: float("nan") for name in FEATURE_NAMES}, {"fatigue_score": "x"}):
        for points, confidence, _ in systems.predict(features, 21.5).values():
            assert math.isfinite(points) and 0 <= points <= 60
            assert 0 <= confidence <= 100
    # No features at all: the scoring averages fall back to the line.
    assert systems.moving_average({}, 21.5)[0] == 21.5


def test_extreme_features_are_clipped():
    hot = {name: 1e6 for name in FEATURE_NAMES}
    cold = {name: -1e6 for name in FEATURE_NAMES}
    for features in (hot, cold):
        for system_id, system in systems.SYSTEMS.items():
            points, confidence = system(features, 30.0)
            assert 0 <= points <= 60 and 0 <= confidence <= 100, system_id


def test_ensemble_is_the_mean_of_the_other_four():
    for seed in range(5):
        features = _features(seed)
        others = [system(features, 19.5)[0] for system in systems.BASE_SYSTEMS.values()]
        assert len(others) == 4
        assert systems.ensemble_v1(features, 19.5)[0] == pytest.approx(sum(others) / 4, abs=0.005)


def test_systems_respond_to_their_features():
    base = {name: 0.0 for name in FEATURE_NAMES} | {
        "points_avg_last_5": 20.0, "points_avg_last_10": 20.0, "points_avg_season": 20.0,
        "opponent_def_rating": 112.0, "usage_rate_last_10": 0.25, "opponent_pace": 100.0,
        "team_pace": 100.0, "vegas_points_line": 20.0, "minutes_avg_last_10": 30.0,
        "fatigue_score": 70.0, "home_away": 0.5, "days_rest": 1.0, "team_off_rating": 115.0,
    }  # fmt: skip
    assert systems.moving_average(base | {"points_avg_last_5": 30.0}, 20.0)[0] == 25.0
    assert systems.zone_matchup_v1(base, 20.0)[0] == 20.0
    assert systems.zone_matchup_v1(base | {"opponent_def_rating": 118.0}, 20.0)[0] > 20.0
    assert systems.zone_matchup_v1(base | {"shot_zone_mismatch_score": -4.0}, 20.0)[0] < 20.0
    assert systems.xgboost_v1(base, 20.0)[0] == 20.0
    assert systems.xgboost_v1(base | {"back_to_back": 1.0}, 20.0)[0] < 20.0
    assert systems.similarity_balanced_v1(base, 20.0)[0] == 20.0
    assert systems.similarity_balanced_v1(base | {"opponent_pace": 110.0}, 20.0)[0] > 20.0
    assert "FIXED LINEAR" in systems.xgboost_v1.__doc__


@pytest.mark.parametrize(
    ("predicted", "line", "call"),
    [
        (21.0, 20.0, "OVER"), (20.99, 20.0, "PASS"), (20.0, 20.0, "PASS"),
        (19.01, 20.0, "PASS"), (19.0, 20.0, "UNDER"), (0.0, 5.5, "UNDER"), (40.0, 35.5, "OVER"),
    ],
)  # fmt: skip
def test_recommendation_passes_within_one_point(predicted, line, call):
    assert systems.recommendation(predicted, line) == call


# -- requests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe", b"not json", b"[]", b"null",
        json.dumps({"game_date": "2026-11-29"}).encode(),
        json.dumps({"player_lookup": "", "game_date": "2026-11-29"}).encode(),
        json.dumps({"player_lookup": "x", "game_date": "2026-02-30"}).encode(),
        json.dumps({"player_lookup": "x", "game_date": "20261129"}).encode(),
        b'{"player_lookup": "x", "game_date": "2026-11-29", "line_values": "20"}',
        b'{"player_lookup": "x", "game_date": "2026-11-29", "line_values": [true]}',
        b'{"player_lookup": "x", "game_date": "2026-11-29", "line_values": [NaN]}',
        json.dumps({"player_lookup": 7, "game_date": "2026-11-29"}).encode(),
    ],
)  # fmt: skip
def test_malformed_requests_are_rejected(body):
    with pytest.raises(MalformedRequest):
        parse_request(body)


def test_a_request_parses():
    request = parse_request(
        json.dumps(
            {
                "request_id": "2026-11-29/x/1",
                "player_lookup": "x",
                "game_date": "2026-11-29",
                "game_id": "g",
                "line_values": [20.5],
            }
        )  # fmt: skip
    )
    assert (request.game_date, request.player_lookup, request.line) == (GAME_DATE, "x", 20.5)


# -- DuckDB + the local outbox ---------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(tmp_path_factory.mktemp("worker"), [SPEC])


@pytest.fixture
def settings(template, tmp_path):
    return copy_of(template, tmp_path)


def _query(settings, sql, params=None):
    wh = connect(settings)
    try:
        return wh.query(sql, params or {})
    finally:
        wh.close()


def _coverage(settings, game_date=GAME_DATE):
    wh = connect(settings)
    try:
        return marts.coverage(wh, game_date)
    finally:
        wh.close()


def _rows_per_key(settings, game_date=GAME_DATE) -> dict[tuple[str, str], int]:
    rows = _query(
        settings,
        f"select player_lookup, system_id, count(*) as n from {PREDICTIONS}"
        " where game_date = @game_date group by player_lookup, system_id",
        {"game_date": game_date},
    )
    return {(r["player_lookup"], r["system_id"]): r["n"] for r in rows}


def _predictions(settings, game_date=GAME_DATE) -> list[dict]:
    return _query(
        settings,
        f"select * from {PREDICTIONS} where game_date = @game_date"
        " order by player_lookup, system_id",
        {"game_date": game_date},
    )


def test_worker_predicts_every_pending_player_and_acks(settings):
    counts = SPEC.counts()
    dispatched = Dispatcher(settings).trigger(GAME_DATE)
    assert dispatched.requests_published == counts.pending
    seen = []
    result = run_worker(
        settings, source="local", idle_exit_seconds=0.5, batch_size=100, progress=seen.append
    )
    assert (result.received, result.written_players, result.failed) == (
        counts.pending, counts.pending, 0,
    )  # fmt: skip
    assert sum(seen) == counts.pending and max(seen) <= 100
    coverage = _coverage(settings)
    assert coverage["players_predicted"] == counts.predicted + counts.pending
    assert coverage["players_pending"] == coverage["players_in_flight"] == 0
    unacked = _query(settings, f"select count(*) as n from {OUTBOX} where acked_at is null")
    assert unacked[0]["n"] == 0
    per_key = _rows_per_key(settings)
    assert set(per_key.values()) == {1}
    mine = [r for r in _predictions(settings) if r["prediction_id"].startswith(f"{GAME_DATE}/")]
    assert len(mine) == counts.pending * 5
    row = mine[0]
    assert row["prediction_id"] == f"{GAME_DATE}/{row['player_lookup']}/{row['system_id']}"
    assert row["is_active"] and row["recommendation"] in ("OVER", "UNDER", "PASS")
    context = _query(
        settings,
        "select current_points_line, game_id from nba_analytics.upcoming_player_game_context"
        " where game_date = @game_date and player_lookup = @player",
        {"game_date": GAME_DATE, "player": row["player_lookup"]},
    )[0]
    assert (row["current_points_line"], row["game_id"]) == (
        context["current_points_line"], context["game_id"],
    )  # fmt: skip
    assert dt.datetime.now(dt.UTC).replace(tzinfo=None) - row["created_at"] < dt.timedelta(
        minutes=5
    )
    # Once predicted, the status check is satisfied and nothing is pending any more.
    assert Dispatcher(settings).retry(GAME_DATE).requests_published == 0


def test_second_run_receives_nothing(settings):
    Dispatcher(settings).trigger(GAME_DATE)
    run_worker(settings, source="local", idle_exit_seconds=0.5)
    before = _predictions(settings)
    again = run_worker(settings, source="local", idle_exit_seconds=0.3)
    assert (again.received, again.written_players, again.failed) == (0, 0, 0)
    assert again.duration_ms < 2000
    assert _predictions(settings) == before


def test_redelivered_requests_write_no_duplicate_rows(settings):
    pending = SPEC.counts().pending
    Dispatcher(settings).trigger(GAME_DATE)
    run_worker(settings, source="local", idle_exit_seconds=0.5)
    before = _predictions(settings)
    wh = connect(settings)
    try:  # every message delivered again, as a crash between write and ack would
        wh.execute(f"update {OUTBOX} set acked_at = null where game_date = @d", {"d": GAME_DATE})
    finally:
        wh.close()
    again = run_worker(settings, source="local", idle_exit_seconds=0.5, batch_size=64)
    assert (again.received, again.duplicates, again.written_players, again.failed) == (
        pending, pending, 0, 0,
    )  # fmt: skip
    assert set(_rows_per_key(settings).values()) == {1}
    assert _predictions(settings) == before  # untouched, created_at included


def _put_outbox(settings, bodies: list[bytes | str]) -> list[str]:
    ids = [uuid.uuid4().hex for _ in bodies]
    wh = connect(settings)
    try:
        for message_id, body in zip(ids, bodies, strict=True):
            wh.execute(
                f"insert into {OUTBOX} (message_id, topic, game_date, data, attributes,"
                " published_at, acked_at) values (@id, 'prediction-request', @d, @data, '{}',"
                " @now, null)",
                {
                    "id": message_id,
                    "d": GAME_DATE,
                    "data": body,
                    "now": dt.datetime.now(dt.UTC).replace(tzinfo=None),
                },  # fmt: skip
            )
    finally:
        wh.close()
    return ids


def _pending_rows(settings, n):
    wh = connect(settings)
    try:
        return marts.pending(wh, GAME_DATE)[:n]
    finally:
        wh.close()


def _body(row, attempt=1) -> str:
    message = request_message(
        {**row, "request_id": f"{row['game_date']}/{row['player_lookup']}/{attempt}"},
        "test-batch", "test", "2026-11-29T08:00:00+00:00",
    )  # fmt: skip
    return message.data.decode()


def test_bad_requests_are_counted_failed_logged_and_acked(settings, capsys):
    good = _pending_rows(settings, 2)
    not_ready = _query(
        settings,
        "select * from nba_orchestration.fct_player_dispatch_state"
        " where game_date = @d and state = 'not_ready' and has_features limit 1",
        {"d": GAME_DATE},
    )
    ghost_player = "nobody'; drop table x; --"
    ghost = {
        **good[0],
        "player_lookup": ghost_player,
        "request_fields": json.dumps(
            {**json.loads(good[0]["request_fields"]), "player_lookup": ghost_player}
        ),
    }
    bodies = [
        "{not json",
        json.dumps({"player_lookup": "x"}),
        _body(ghost),
        _body(good[0]),
        _body(good[1]),
        _body(good[1], attempt=2),
        *[_body(r) for r in not_ready],
    ]
    _put_outbox(settings, bodies)
    result = run_worker(settings, source="local", idle_exit_seconds=0.3)
    assert result.received == len(bodies)
    assert result.written_players == 2
    assert result.duplicates == 1  # good[1] twice in one batch
    assert result.failed == 3 + len(not_ready)
    assert (
        _query(settings, f"select count(*) as n from {OUTBOX} where acked_at is null")[0]["n"] == 0
    )
    assert set(_rows_per_key(settings).values()) == {1}
    logs = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    failures = [entry for entry in logs if entry["message"].startswith("prediction request failed")]
    assert len(failures) == result.failed
    assert any(f.get("player_lookup") == ghost["player_lookup"] for f in failures)
    assert all(f["severity"] in ("ERROR", "WARNING") and f["message_id"] for f in failures)
    assert logs[-1]["message"] == "worker finished" and logs[-1]["failed"] == result.failed


def test_max_messages_stops_the_worker_and_leaves_the_rest(settings):
    pending = SPEC.counts().pending
    Dispatcher(settings).trigger(GAME_DATE)
    first = run_worker(settings, source="local", max_messages=30, batch_size=8)
    assert (first.received, first.written_players) == (30, 30)
    left = _query(settings, f"select count(*) as n from {OUTBOX} where acked_at is null")
    assert left[0]["n"] == pending - 30
    rest = run_worker(settings, source="local", idle_exit_seconds=0.3)
    assert rest.received == pending - 30
    assert _coverage(settings)["players_pending"] == 0


def test_partially_predicted_players_are_completed_without_duplicates(settings):
    partial = _query(
        settings,
        f"select distinct player_lookup from {PREDICTIONS} where game_date = @d and not is_active",
        {"d": GAME_DATE},
    )
    assert len(partial) == SPEC.counts().partially_predicted
    Dispatcher(settings).trigger(GAME_DATE)
    run_worker(settings, source="local", idle_exit_seconds=0.3)
    rows = _query(
        settings,
        f"select count(*) as n, count(case when is_active then 1 end) as active from {PREDICTIONS}"
        " where game_date = @d and player_lookup in (select * from unnest(@players))",
        {"d": GAME_DATE, "players": [r["player_lookup"] for r in partial]},
    )[0]
    assert rows["n"] == rows["active"] == 5 * len(partial)


def test_changed_features_rewrite_the_predictions(settings):
    row = _pending_rows(settings, 1)[0]
    _put_outbox(settings, [_body(row)])
    run_worker(settings, source="local", idle_exit_seconds=0.3)
    before = {r["system_id"]: r for r in _predictions(settings)
              if r["player_lookup"] == row["player_lookup"]}  # fmt: skip
    wh = connect(settings)
    try:  # Phase 4 reran: the player's recent scoring moved up by ten points
        wh.execute(
            "update nba_predictions.ml_feature_store_v2"
            " set features = list_transform(features, x -> x + 10)"
            " where game_date = @d and player_lookup = @p",
            {"d": GAME_DATE, "p": row["player_lookup"]},
        )
    finally:
        wh.close()
    _put_outbox(settings, [_body(row, attempt=2)])
    result = run_worker(settings, source="local", idle_exit_seconds=0.3)
    assert (result.written_players, result.duplicates) == (1, 0)
    after = {r["system_id"]: r for r in _predictions(settings)
             if r["player_lookup"] == row["player_lookup"]}  # fmt: skip
    assert set(after) == set(required_systems()) == set(before)
    assert (
        after["moving_average"]["predicted_points"] > before["moving_average"]["predicted_points"]
    )
    assert set(_rows_per_key(settings).values()) == {1}


def test_an_idle_worker_lets_a_dispatcher_in_another_process_open_the_file(settings):
    import subprocess
    import sys
    import threading

    pending = SPEC.counts().pending
    done = {}
    worker = threading.Thread(
        target=lambda: done.update(
            result=run_worker(settings, source="local", max_messages=pending, idle_exit_seconds=60)
        )
    )
    worker.start()
    try:
        dispatch = (
            "import datetime, sys; from dispatcher.config import Settings;"
            " from dispatcher.dispatch import Dispatcher;"
            " r = Dispatcher(Settings(duckdb_path=sys.argv[1])).trigger("
            "datetime.date.fromisoformat(sys.argv[2])); print(r.requests_published)"
        )
        out = subprocess.run(
            [sys.executable, "-c", dispatch, str(settings.duckdb_path), GAME_DATE.isoformat()],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        assert out.stdout.strip() == str(pending)
    finally:
        worker.join(timeout=90)
    assert done["result"].received == pending
    assert _coverage(settings)["players_pending"] == 0


def test_bad_arguments_are_refused(settings):
    with pytest.raises(ValueError):
        run_worker(settings, source="kafka", max_messages=1)
    with pytest.raises(ValueError):
        run_worker(settings, source="local", batch_size=0, max_messages=1)


# -- Pub/Sub ----------------------------------------------------------------------------------

PUBSUB_PROJECT = "worker-test"
SUBSCRIPTION = "prediction-request-worker"


def _pubsub(monkeypatch, pubsub_emulator) -> None:
    from dispatcher.transport_pubsub import ensure_subscription, ensure_topics

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    ensure_topics(PUBSUB_PROJECT, ["prediction-request"])
    ensure_subscription(PUBSUB_PROJECT, "prediction-request", SUBSCRIPTION)


@pytest.mark.pubsub
def test_pubsub_worker_completes_coverage_and_drops_a_duplicate(
    settings, pubsub_emulator, monkeypatch
):
    from dispatcher.transport_pubsub import PubSubTransport

    _pubsub(monkeypatch, pubsub_emulator)
    settings = settings.with_(transport="pubsub", gcp_project=PUBSUB_PROJECT)
    counts = SPEC.counts()
    dispatched = Dispatcher(settings).trigger(GAME_DATE)
    assert dispatched.requests_published == counts.pending
    result = run_worker(
        settings, source="pubsub", subscription=SUBSCRIPTION, max_messages=counts.pending,
        idle_exit_seconds=20,
    )  # fmt: skip
    assert (result.received, result.written_players, result.failed) == (
        counts.pending, counts.pending, 0,
    )  # fmt: skip
    coverage = _coverage(settings)
    assert coverage["players_predicted"] == counts.predicted + counts.pending
    assert coverage["players_pending"] == 0
    before = _predictions(settings)

    # One request published again (Pub/Sub redelivery, or a consumer retry).
    player = next(r["player_lookup"] for r in before if r["prediction_id"].startswith("2026"))
    row = _query(
        settings,
        "select * from nba_orchestration.fct_player_dispatch_state"
        " where game_date = @d and player_lookup = @p",
        {"d": GAME_DATE, "p": player},
    )[0]
    transport = PubSubTransport(PUBSUB_PROJECT)
    try:
        message = request_message(
            {**row, "request_id": f"{GAME_DATE}/{player}/1"}, dispatched.batch_id, "pubsub",
            "2026-11-29T08:31:00+00:00",
        )  # fmt: skip
        assert transport.publish("prediction-request", [message], timeout=10)[0].ok
    finally:
        transport.close()
    again = run_worker(settings, source="pubsub", subscription=SUBSCRIPTION, idle_exit_seconds=3)
    assert (again.received, again.duplicates, again.written_players) == (1, 1, 0)
    assert _predictions(settings) == before
    assert set(_rows_per_key(settings).values()) == {1}
    # Everything was acknowledged: nothing comes back.
    assert (
        run_worker(
            settings, source="pubsub", subscription=SUBSCRIPTION, idle_exit_seconds=1.5
        ).received
        == 0
    )


@pytest.mark.pubsub
def test_pubsub_worker_fails_clearly_on_a_missing_subscription(
    settings, pubsub_emulator, monkeypatch
):
    _pubsub(monkeypatch, pubsub_emulator)
    with pytest.raises(WorkerError, match="no-such-subscription"):
        run_worker(
            settings.with_(gcp_project=PUBSUB_PROJECT), source="pubsub",
            subscription="no-such-subscription", idle_exit_seconds=10,
        )  # fmt: skip


# -- BigQuery writes ---------------------------------------------------------------------------

BQ_DATE = dt.date(2026, 11, 5)
BQ_SPEC = SlateSpec(
    game_date=BQ_DATE, teams=2, players_per_team=6, share_predicted=0.3,
    share_partially_predicted=0.2, seed=5,
)  # fmt: skip


@pytest.mark.bigquery
def _contract_body(context: dict) -> str:
    """A prediction request as the contract spells it, from a Phase 3 context row."""
    line = context["current_points_line"]
    return json.dumps({
        "request_id": f"{context['game_date']}/{context['player_lookup']}/1",
        "player_lookup": context["player_lookup"],
        "game_date": str(context["game_date"]),
        "game_id": context["game_id"],
        "line_values": [] if line is None else [float(line)],
        "team_abbr": context["team_abbr"],
        "opponent_team_abbr": context["opponent_team_abbr"],
        "is_home": bool(context["home_game"]),
        "batch_id": "test-batch",
        "trigger_source": "test",
        "requested_at": "2026-11-29T08:00:00+00:00",
    })  # fmt: skip


def test_bigquery_writes_are_idempotent(bigquery_scenarios, bigquery_client):
    """The worker reads features through the dbt models: the scenario fixture built them."""
    slate = generate_slate(BQ_SPEC)
    write_bigquery(bigquery_client, "nba-test", slate)
    settings = bigquery_scenarios
    context = {r["player_lookup"]: r for r in slate.context}
    ready = [r["player_lookup"] for r in slate.features if r["is_production_ready"]]
    context["nobody"] = {**context[ready[0]], "player_lookup": "nobody"}  # no features row
    deliveries = [
        Delivery(_contract_body(context[p]), f"m{n}") for n, p in enumerate([*ready, "nobody"])
    ]
    wh = connect(settings)
    try:
        first = process_batch(wh, deliveries)
        assert (first.written_players, first.duplicates, first.failed) == (len(ready), 0, 1)

        def per_key():
            rows = wh.query(
                f"select player_lookup, system_id, count(*) as n, countif(is_active) as active"
                f" from {PREDICTIONS} where game_date = @d group by player_lookup, system_id",
                {"d": BQ_DATE},
            )
            return {(r["player_lookup"], r["system_id"]): (r["n"], r["active"]) for r in rows}

        after_first = per_key()
        assert {(p, s) for p in ready for s in required_systems()} <= set(after_first)
        assert set(after_first.values()) == {(1, 1)}

        second = process_batch(wh, deliveries)
        assert (second.written_players, second.duplicates, second.failed) == (0, len(ready), 1)
        assert per_key() == after_first

        # write_predictions on its own: twice the same rows, still one row per key.
        rows = wh.query(
            f"select * from {PREDICTIONS} where game_date = @d and player_lookup = @p",
            {"d": BQ_DATE, "p": ready[0]},
        )
        for _ in range(2):
            assert write_predictions(wh, rows) == len(required_systems())
        assert per_key() == after_first
        stored = wh.query(
            f"select prediction_id, current_points_line from {PREDICTIONS}"
            " where game_date = @d and player_lookup = @p",
            {"d": BQ_DATE, "p": ready[0]},
        )
        assert {r["prediction_id"] for r in stored} == {
            f"{BQ_DATE}/{ready[0]}/{s}" for s in required_systems()
        }
        assert {r["current_points_line"] for r in stored} == {
            context[ready[0]]["current_points_line"]
        }
    finally:
        wh.close()


def test_a_failing_batch_is_left_unacknowledged(settings):
    pending = SPEC.counts().pending
    Dispatcher(settings).trigger(GAME_DATE)
    wh = connect(settings)
    try:
        wh.execute(f"alter table {PREDICTIONS} rename to player_prop_predictions_away")
    finally:
        wh.close()
    with pytest.raises(WorkerError, match="a batch of 100 requests failed"):
        run_worker(settings, source="local", idle_exit_seconds=0.3)
    unacked = f"select count(*) as n from {OUTBOX} where acked_at is null"
    assert _query(settings, unacked)[0]["n"] == pending
    wh = connect(settings)
    try:
        wh.execute(
            "alter table nba_predictions.player_prop_predictions_away"
            " rename to player_prop_predictions"
        )
    finally:
        wh.close()
    result = run_worker(settings, source="local", idle_exit_seconds=0.3)
    assert (result.received, result.written_players) == (pending, pending)
    assert _query(settings, unacked)[0]["n"] == 0
