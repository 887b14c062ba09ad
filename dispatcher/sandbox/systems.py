"""The five prediction systems of the reference Phase 5 worker: honest baselines,
registered by system id in `SYSTEMS`.

Production Phase 5 keeps its own models. These stand-ins exist so that local runs,
the demo and the tests produce predictions under the system ids production uses
(``moving_average``, ``zone_matchup_v1``, ``similarity_balanced_v1``, ``xgboost_v1``,
``ensemble_v1``); which of them a player needs is the dbt var required_systems, not
this module. Each is a pure, deterministic function of the player's Phase 4 features
(name -> value) and the points line:

    system(features, line) -> (predicted_points, confidence_score)

predicted_points is clipped to [0, 60] and rounded to 2 decimals; confidence_score
to [0, 100], 2 decimals. A feature that is missing or not finite falls back to a
neutral value (the line for scoring averages, the league mean for rates), so a thin
feature row still predicts. None of them is trained; none should be bet on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

Features = Mapping[str, float]
System = Callable[[Features, float], tuple[float, float]]

MAX_POINTS = 60.0
#: |predicted - line| below this is a PASS (the sample slate uses the same edge).
EDGE_POINTS = 1.0

# League reference points the adjustments are centred on.
LEAGUE_DEF_RATING = 112.0
LEAGUE_PACE = 100.0
LEAGUE_USAGE = 0.25
LEAGUE_MINUTES = 30.0


def _clip(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def _value(features: Features, name: str, default: float) -> float:
    raw = features.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default


def _result(points: float, confidence: float) -> tuple[float, float]:
    return round(_clip(points, 0.0, MAX_POINTS), 2), round(_clip(confidence, 0.0, 100.0), 2)


def recommendation(predicted: float, line: float) -> str:
    """OVER / UNDER when the prediction is at least EDGE_POINTS off the line, else PASS."""
    edge = predicted - line
    if edge >= EDGE_POINTS:
        return "OVER"
    if edge <= -EDGE_POINTS:
        return "UNDER"
    return "PASS"


def moving_average(features: Features, line: float) -> tuple[float, float]:
    """Weighted recent scoring: 50 % last 5, 30 % last 10, 20 % season.

    Confidence falls with the player's scoring spread (points_std_last_10) and with
    the gap between recent and season form.
    """
    last_5 = _value(features, "points_avg_last_5", line)
    last_10 = _value(features, "points_avg_last_10", line)
    season = _value(features, "points_avg_season", line)
    spread = _value(features, "points_std_last_10", 5.0)
    points = 0.5 * last_5 + 0.3 * last_10 + 0.2 * season
    confidence = 90.0 - 4.0 * spread - 2.0 * abs(last_5 - season)
    return _result(points, _clip(confidence, 20.0, 95.0))


def zone_matchup_v1(features: Features, line: float) -> tuple[float, float]:
    """The line adjusted for the matchup: a soft defence (rating above the league's
    112) and a favourable shot-zone mismatch add points, a stingy one takes them.

    Confidence grows with the size of the matchup signal.
    """
    def_rating = _value(features, "opponent_def_rating", LEAGUE_DEF_RATING)
    mismatch = _value(features, "shot_zone_mismatch_score", 0.0)
    adjustment = 0.3 * (def_rating - LEAGUE_DEF_RATING) + 0.5 * mismatch
    points = line + adjustment
    return _result(points, 50.0 + 5.0 * min(abs(adjustment), 8.0))


def similarity_balanced_v1(features: Features, line: float) -> tuple[float, float]:
    """A blend of the line and recent scoring (last 5 / last 10), leaning on recent
    form when the game should be fast or the player's usage is up; scaled by the
    expected pace of the game.

    Not a nearest-neighbour search: the weight stands in for "similar games".
    """
    recent = (
        _value(features, "points_avg_last_5", line) + _value(features, "points_avg_last_10", line)
    ) / 2
    pace_score = _value(features, "pace_score", 0.0)
    usage = _value(features, "usage_rate_last_10", LEAGUE_USAGE)
    usage_spike = _value(features, "usage_spike_score", 0.0)
    weight = _clip(
        0.5 + 0.05 * pace_score + 0.5 * (usage - LEAGUE_USAGE) + 0.05 * usage_spike, 0.2, 0.8
    )
    game_pace = (
        _value(features, "opponent_pace", LEAGUE_PACE) + _value(features, "team_pace", LEAGUE_PACE)
    ) / 2
    points = (weight * recent + (1 - weight) * line) * (1 + (game_pace - LEAGUE_PACE) / 200)
    confidence = 75.0 - 40.0 * abs(weight - 0.5) - 1.5 * abs(recent - line)
    return _result(points, _clip(confidence, 25.0, 90.0))


#: xgboost_v1's fixed coefficients: (feature, centre, weight); contribution = weight x (x - centre).
LINEAR_MODEL = (
    ("minutes_avg_last_10", LEAGUE_MINUTES, 0.15),
    ("usage_spike_score", 0.0, 0.6),
    ("fatigue_score", 70.0, -0.03),
    ("opponent_def_rating", LEAGUE_DEF_RATING, 0.2),
    ("home_away", 0.5, 0.6),
    ("back_to_back", 0.0, -0.8),
    ("days_rest", 1.0, 0.25),
    ("team_off_rating", 115.0, 0.1),
    ("line_movement", 0.0, 0.5),
)
#: Weights of the scoring-level features (they sum to 1: the level of the prediction).
LINEAR_LEVEL = (
    ("points_avg_last_5", 0.3),
    ("points_avg_last_10", 0.25),
    ("points_avg_season", 0.2),
    ("vegas_points_line", 0.25),
)


def xgboost_v1(features: Features, line: float) -> tuple[float, float]:
    """A FIXED LINEAR model over the features, standing in for the production
    XGBoost model under its system id. It is not XGBoost and was never trained:
    a hand-set weighted level (recent/season averages and the Vegas line) plus
    hand-set adjustments (minutes, usage spike, fatigue, defence, home, rest, ...),
    see LINEAR_LEVEL and LINEAR_MODEL.

    Confidence falls with the player's scoring spread and with fatigue.
    """
    level = sum(weight * _value(features, name, line) for name, weight in LINEAR_LEVEL)
    adjustments = sum(
        weight * (_value(features, name, centre) - centre) for name, centre, weight in LINEAR_MODEL
    )
    spread = _value(features, "points_std_last_10", 5.0)
    fatigue = _value(features, "fatigue_score", 70.0)
    confidence = 85.0 - 3.0 * spread - 0.2 * max(fatigue - 70.0, 0.0)
    return _result(level + adjustments, _clip(confidence, 20.0, 95.0))


BASE_SYSTEMS: dict[str, System] = {
    "moving_average": moving_average,
    "zone_matchup_v1": zone_matchup_v1,
    "similarity_balanced_v1": similarity_balanced_v1,
    "xgboost_v1": xgboost_v1,
}


def ensemble_v1(features: Features, line: float) -> tuple[float, float]:
    """The mean of the four other systems' predictions. Confidence: their mean
    confidence, less 5 per point of disagreement (standard deviation) between them."""
    outputs = [system(features, line) for system in BASE_SYSTEMS.values()]
    points = [p for p, _ in outputs]
    mean = sum(points) / len(points)
    spread = math.sqrt(sum((p - mean) ** 2 for p in points) / len(points))
    confidence = sum(c for _, c in outputs) / len(outputs) - 5.0 * spread
    return _result(mean, confidence)


#: The registry: system id -> implementation. The systems a player needs are the dbt
#: var required_systems (the worker reads it); every one of them must be here.
SYSTEMS: dict[str, System] = {**BASE_SYSTEMS, "ensemble_v1": ensemble_v1}


def predict(
    features: Features, line: float, implementations: Mapping[str, System] = SYSTEMS
) -> dict[str, tuple[float, float, str]]:
    """(predicted_points, confidence_score, recommendation) of each system of
    ``implementations`` (system id -> system; by default every system here)."""
    out = {}
    for system_id, system in implementations.items():
        points, confidence = system(features, line)
        out[system_id] = (points, confidence, recommendation(points, line))
    return out
