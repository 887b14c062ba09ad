"""Sample slates: the Phase 3/4/5 rows of one game date, with predictable counts.

A `SlateSpec` says how many players fall in each readiness state; `generate_slate` turns
it into rows for the tables of :mod:`.tables` (the slate's games in `nbac_schedule`,
`upcoming_player_game_context`, `ml_feature_store_v2`, `player_prop_predictions` and
the `request_ledger` rows of an earlier run); :mod:`.load` writes them to a warehouse.
`SlateSpec.counts()` gives every number the readiness / coverage marts must report,
without generating rows.

Semantics the counts follow (the dbt marts implement the same):

- expected: avg_minutes_per_game_last_7 >= the dbt var min_minutes and player_status
  null or not one of excluded_player_statuses (the slate writes OUT and DOUBTFUL);
- in feature store / ready: an expected player with a feature row / with
  is_production_ready true;
- predicted: an active prediction from every system of the dbt var required_systems;
- in flight: not predicted, and a ledger row with coalesce(published_at, claimed_at)
  inside the lease (var request_lease_minutes) before `now`;
- pending: ready, not predicted, not in flight; not_ready: expected, not predicted,
  not ready.

Every count is `share x base` rounded half up, on the bases in the order of the
`SlateSpec` fields; players are assigned to states by slicing one seeded shuffle.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ..project import dbt_vars, required_systems
from .systems import recommendation

__all__ = [
    "FEATURE_NAMES",
    "TEAMS",
    "Slate",
    "SlateCounts",
    "SlateSpec",
    "generate_slate",
]

MIN_MINUTES = float(dbt_vars()["min_minutes"])
FEATURE_VERSION = "v2_25features"
TRIGGER_SOURCE = "pubsub"

# In-flight claims sit well inside the lease; expired ones well outside any sane lease.
IN_FLIGHT_AGE = timedelta(minutes=2)
EXPIRED_CLAIM_AGE = timedelta(hours=2)

TEAMS = (
    "ATL", "BKN", "BOS", "CHA", "CHI", "CLE", "DAL", "DEN", "DET", "GSW",
    "HOU", "IND", "LAC", "LAL", "MEM", "MIA", "MIL", "MIN", "NOP", "NYK",
    "OKC", "ORL", "PHI", "PHX", "POR", "SAC", "SAS", "TOR", "UTA", "WAS",
)  # fmt: skip

FEATURE_NAMES = (
    # scoring form
    "points_avg_last_5", "points_avg_last_10", "points_avg_season", "points_std_last_10",
    "minutes_avg_last_10", "fg_pct_last_10", "three_pt_rate_last_10", "ft_rate_last_10",
    "usage_rate_last_10", "rebounds_avg_last_10", "assists_avg_last_10",
    # composite factors
    "fatigue_score", "shot_zone_mismatch_score", "pace_score", "usage_spike_score",
    # matchup and schedule
    "opponent_def_rating", "opponent_pace", "home_away", "back_to_back", "days_rest",
    "games_in_last_7_days", "team_pace", "team_off_rating",
    # market
    "vegas_points_line", "line_movement",
)  # fmt: skip
assert len(FEATURE_NAMES) == 25

FIRST_NAMES = (
    "aaron", "andre", "anthony", "bam", "ben", "bradley", "brandon", "cade", "chris", "damian",
    "darius", "devin", "dejounte", "donovan", "evan", "franz", "fred", "gary", "isaiah", "jalen",
    "jamal", "jaren", "jaylen", "jimmy", "jordan", "josh", "julius", "karl", "keegan", "kevin",
    "kyle", "lamelo", "luka", "malik", "marcus", "mikal", "myles", "nikola", "norman", "og",
    "paolo", "pascal", "paul", "rudy", "scottie", "shai", "stephen", "trae", "tyrese", "zach",
)  # fmt: skip
LAST_NAMES = (
    "adams", "allen", "anderson", "bailey", "barnes", "bridges", "brooks", "brown", "butler",
    "carter", "collins", "davis", "edwards", "fox", "george", "green", "gordon", "harris",
    "hart", "holiday", "hunter", "jackson", "james", "johnson", "jones", "lopez", "martin",
    "mitchell", "morris", "murray", "nance", "porter", "powell", "randle", "reid", "robinson",
    "sabonis", "smart", "smith", "strus", "thomas", "thompson", "turner", "walker", "wallace",
    "white", "wiggins", "williams", "young", "zubac",
)  # fmt: skip
HEALTHY_STATUSES = (None, None, None, "AVAILABLE", "AVAILABLE", "PROBABLE", "QUESTIONABLE")


# --- spec and counts ------------------------------------------------------------------


def share_of(share: float, base: int) -> int:
    """share x base rounded half up, exactly (0.5 x 45 is 23, not banker's 22)."""
    return int((Decimal(repr(share)) * base).to_integral_value(rounding=ROUND_HALF_UP))


def default_phase4_completed_at(game_date: date) -> datetime:
    """00:30 America/Los_Angeles on the game date, in UTC (DST-safe)."""
    try:
        from zoneinfo import ZoneInfo

        local = datetime.combine(game_date, time(0, 30), tzinfo=ZoneInfo("America/Los_Angeles"))
        return local.astimezone(UTC)
    except Exception:  # noqa: BLE001 - no tz database in the image: PST is the season default
        return datetime.combine(game_date, time(8, 30), tzinfo=UTC)


@dataclass(frozen=True)
class SlateCounts:
    """How many players of a slate are in each state (what the marts must report)."""

    players: int
    expected: int
    out: int
    doubtful: int
    below_minutes: int
    in_feature_store: int
    ready: int
    not_ready: int
    predicted: int
    partially_predicted: int
    in_flight: int
    pending: int
    lease_expired: int = 0

    @property
    def missing(self) -> int:
        """Expected players neither predicted nor in flight (fct_prediction_coverage)."""
        return self.expected - self.predicted - self.in_flight

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class SlateSpec:
    """The knobs of a sample slate for one game date.

    out / doubtful / below_minutes are shares of all players (the non-expected ones);
    missing_features is a share of expected players; production_ready a share of expected
    players with a feature row; predicted and partially_predicted shares of ready players
    (partial = every required system but one active, that one inactive); in_flight a
    share of ready players not fully predicted (claimed and published 2 minutes before
    `now`); lease_expired a share of the pending players (an unpublished claim 2 hours
    old, so still pending). `now` defaults to the wall clock at generation;
    phase4_completed_at to 00:30 PT on the game date. Both must be timezone-aware.
    Phase 4's feature rows land over the 15 minutes up to phase4_completed_at, or all
    at it with phase4_in_one_write (one bulk write, as the demo's waves are).
    """

    game_date: date
    teams: int = 30
    players_per_team: int = 15
    share_out: float = 0.04
    share_doubtful: float = 0.02
    share_below_minutes: float = 0.10
    share_missing_features: float = 0.02
    share_production_ready: float = 0.95
    share_predicted: float = 0.0
    share_partially_predicted: float = 0.0
    share_in_flight: float = 0.0
    seed: int = 0
    now: datetime | None = None
    phase4_completed_at: datetime | None = None
    share_lease_expired: float = 0.0
    #: Write the slate's games to the NBA schedule (False: a slate on a date with no game).
    on_schedule: bool = True
    #: False: the games are scheduled but Phase 3 never wrote the slate, so only the
    #: schedule rows are generated and the slate's counts are all zero.
    phase3_written: bool = True
    #: True: every feature row is stamped phase4_completed_at (Phase 4 wrote them at once).
    phase4_in_one_write: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.game_date, datetime) or not isinstance(self.game_date, date):
            raise ValueError(f"game_date must be a date, got {self.game_date!r}")
        for name in ("teams", "players_per_team", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if not 2 <= self.teams <= len(TEAMS) or self.teams % 2:
            raise ValueError(f"teams must be even and between 2 and {len(TEAMS)}, got {self.teams}")
        if not 1 <= self.players_per_team <= 30:
            raise ValueError(
                f"players_per_team must be between 1 and 30, got {self.players_per_team}"
            )
        for f in fields(self):
            if f.name.startswith("share_"):
                value = getattr(self, f.name)
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not math.isfinite(value)
                    or not 0 <= value <= 1
                ):
                    raise ValueError(f"{f.name} must be a number in [0, 1], got {value!r}")
        for name in ("now", "phase4_completed_at"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, datetime):
                raise ValueError(f"{name} must be a datetime, got {value!r}")
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value!r}")
        self.counts()  # the combinations must fit too

    @property
    def players(self) -> int:
        return self.teams * self.players_per_team

    def counts(self) -> SlateCounts:
        """Every state's size, derived from the knobs alone (no rows are generated)."""
        players = self.players
        out = share_of(self.share_out, players)
        doubtful = share_of(self.share_doubtful, players)
        below_minutes = share_of(self.share_below_minutes, players)
        if out + doubtful + below_minutes > players:
            raise ValueError(
                f"share_out + share_doubtful + share_below_minutes exceed all players: "
                f"{out} + {doubtful} + {below_minutes} > {players}"
            )
        expected = players - out - doubtful - below_minutes
        in_feature_store = expected - share_of(self.share_missing_features, expected)
        ready = share_of(self.share_production_ready, in_feature_store)
        predicted = share_of(self.share_predicted, ready)
        partially_predicted = share_of(self.share_partially_predicted, ready)
        if predicted + partially_predicted > ready:
            raise ValueError(
                f"share_predicted + share_partially_predicted exceed the ready players: "
                f"{predicted} + {partially_predicted} > {ready}"
            )
        in_flight = share_of(self.share_in_flight, ready - predicted)
        pending = ready - predicted - in_flight
        return SlateCounts(
            players=players,
            expected=expected,
            out=out,
            doubtful=doubtful,
            below_minutes=below_minutes,
            in_feature_store=in_feature_store,
            ready=ready,
            not_ready=expected - ready,
            predicted=predicted,
            partially_predicted=partially_predicted,
            in_flight=in_flight,
            pending=pending,
            lease_expired=share_of(self.share_lease_expired, pending),
        )


@dataclass
class Slate:
    """Rows of the five tables for one game date, plus what they are meant to show.

    Row dicts have exactly the table's columns; timestamps are tz-aware UTC datetimes,
    dates are `date`, NUMERIC values are floats with at most two decimals.
    `player_states` maps each player_lookup to out / doubtful / below_minutes /
    not_ready / pending / in_flight / predicted.
    """

    spec: SlateSpec
    now: datetime
    phase4_completed_at: datetime
    counts: SlateCounts
    schedule: list[dict[str, Any]] = field(default_factory=list)
    context: list[dict[str, Any]] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    player_states: dict[str, str] = field(default_factory=dict)

    @property
    def game_date(self) -> date:
        return self.spec.game_date

    def rows(self, key: str) -> list[dict[str, Any]]:
        """Rows for a table key: schedule, context, features, predictions or ledger."""
        return getattr(self, key)


# --- generation -----------------------------------------------------------------------


def roster(seed: int, players_per_team: int) -> dict[str, list[str]]:
    """Unique player_lookups per team, the same for every date of a seed."""
    rng = random.Random(f"roster/{seed}")
    taken: set[str] = set()
    teams: dict[str, list[str]] = {}
    for team in TEAMS:
        players = []
        for _ in range(players_per_team):
            base = rng.choice(FIRST_NAMES) + rng.choice(LAST_NAMES)
            lookup, suffix = base, 2
            while lookup in taken:
                lookup, suffix = f"{base}{suffix}", suffix + 1
            taken.add(lookup)
            players.append(lookup)
        teams[team] = players
    return teams


def half_steps(value: float, low: float, high: float) -> float:
    """Clamp to [low, high] and round to the nearest .5 (a sportsbook line)."""
    return min(high, max(low, round(value * 2) / 2))


def feature_vector(rng: random.Random, line: float, minutes: float, home: bool) -> list[float]:
    ppm = line / max(minutes, 1.0)
    values = [
        line + rng.gauss(0, 2.5),  # points_avg_last_5
        line + rng.gauss(0, 1.8),  # points_avg_last_10
        line + rng.gauss(0, 1.2),  # points_avg_season
        rng.uniform(2.0, 8.0),  # points_std_last_10
        minutes + rng.gauss(0, 1.5),  # minutes_avg_last_10
        rng.uniform(0.38, 0.58),  # fg_pct_last_10
        rng.uniform(0.1, 0.55),  # three_pt_rate_last_10
        rng.uniform(0.1, 0.45),  # ft_rate_last_10
        rng.uniform(0.12, 0.35) + ppm / 10,  # usage_rate_last_10
        rng.uniform(1.5, 12.0),  # rebounds_avg_last_10
        rng.uniform(0.5, 9.0),  # assists_avg_last_10
        rng.uniform(40, 100),  # fatigue_score
        rng.uniform(-5, 5),  # shot_zone_mismatch_score
        rng.uniform(-3, 3),  # pace_score
        rng.uniform(-2, 2),  # usage_spike_score
        rng.uniform(105, 120),  # opponent_def_rating
        rng.uniform(95, 104),  # opponent_pace
        1.0 if home else 0.0,  # home_away
        float(rng.random() < 0.2),  # back_to_back
        float(rng.choice((0, 1, 1, 2, 2, 3))),  # days_rest
        float(rng.choice((2, 3, 3, 4))),  # games_in_last_7_days
        rng.uniform(95, 104),  # team_pace
        rng.uniform(108, 122),  # team_off_rating
        line,  # vegas_points_line
        rng.choice((-1.0, -0.5, 0.0, 0.0, 0.5, 1.0)),  # line_movement
    ]
    return [round(value, 3) for value in values]


def rng_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate_slate(spec: SlateSpec) -> Slate:
    """Rows for spec.game_date whose states match spec.counts() exactly.

    Deterministic for (seed, game_date, now, phase4_completed_at): the roster depends on
    the seed only, matchups, states and numbers on the seed and the date.
    """
    counts = spec.counts()
    now = (spec.now or datetime.now(UTC).replace(microsecond=0)).astimezone(UTC)
    phase4 = (spec.phase4_completed_at or default_phase4_completed_at(spec.game_date)).astimezone(
        UTC
    )
    rng = random.Random(f"slate/{spec.seed}/{spec.game_date.isoformat()}")
    players_by_team = roster(spec.seed, spec.players_per_team)
    day = spec.game_date

    playing = rng.sample(TEAMS, spec.teams)
    games = []  # (game_id, away, home)
    for away, home in zip(playing[0::2], playing[1::2], strict=True):
        games.append((f"{day:%Y%m%d}_{away}_{home}", away, home))

    # (player_lookup, team, opponent, game_id, home)
    slots = []
    for game_id, away, home in games:
        for team, opponent, is_home in ((away, home, False), (home, away, True)):
            for player in players_by_team[team]:
                slots.append((player, team, opponent, game_id, is_home))

    # States by slicing one shuffle, in the order of the counts.
    order = list(range(len(slots)))
    rng.shuffle(order)
    c = counts
    cut_out, cut_doubtful = c.out, c.out + c.doubtful
    cut_below = cut_doubtful + c.below_minutes
    expected = order[cut_below:]
    missing_features = set(expected[: c.expected - c.in_feature_store])
    with_features = expected[c.expected - c.in_feature_store :]
    not_production_ready = set(with_features[: c.in_feature_store - c.ready])
    ready = with_features[c.in_feature_store - c.ready :]
    predicted = set(ready[: c.predicted])
    partial = set(ready[c.predicted : c.predicted + c.partially_predicted])
    # In flight from the end of the ready list: it overlaps partial only when it must.
    in_flight = ready[len(ready) - c.in_flight :] if c.in_flight else []
    in_flight_set = set(in_flight)
    pending = [i for i in ready[c.predicted :] if i not in in_flight_set]
    lease_expired = pending[: c.lease_expired]

    status_of: dict[int, str | None] = {}
    state_of: dict[int, str] = {}
    for i in order[:cut_out]:
        status_of[i], state_of[i] = "OUT", "out"
    for i in order[cut_out:cut_doubtful]:
        status_of[i], state_of[i] = "DOUBTFUL", "doubtful"
    for i in order[cut_doubtful:cut_below]:
        status_of[i], state_of[i] = rng.choice(HEALTHY_STATUSES), "below_minutes"
    for i in expected:
        status_of[i] = rng.choice(HEALTHY_STATUSES)
        state_of[i] = "not_ready"
    for i in pending:
        state_of[i] = "pending"
    for i in in_flight:
        state_of[i] = "in_flight"
    for i in predicted:
        state_of[i] = "predicted"

    below = order[cut_doubtful:cut_below]
    # The threshold edges, whenever those groups exist: 15.0 counts, 14.9 does not.
    edge_minutes = {expected[0]: float(MIN_MINUTES)} if expected else {}
    if below:
        edge_minutes[below[0]] = MIN_MINUTES - 0.1

    slate = Slate(spec=spec, now=now, phase4_completed_at=phase4, counts=counts)
    if spec.on_schedule:
        slate.schedule = [
            {
                "game_id": game_id,
                "game_date": day,
                "home_team_tricode": home,
                "away_team_tricode": away,
                "game_status": 1,
            }
            for game_id, away, home in games
        ]
    if not spec.phase3_written:
        slate.counts = SlateCounts(**dict.fromkeys((f.name for f in fields(SlateCounts)), 0))
        slate.player_states = {}
        return slate
    processed_base = phase4 - timedelta(hours=2, minutes=30)
    feature_offsets: dict[int, int] = {}
    for i, (player, team, opponent, game_id, is_home) in enumerate(slots):
        state = state_of[i]
        if i in edge_minutes:
            minutes = edge_minutes[i]
        elif state == "below_minutes":
            minutes = round(rng.uniform(5.0, MIN_MINUTES - 0.1), 1)
        elif state in ("out", "doubtful"):
            minutes = round(rng.uniform(5.0, 38.0), 1)
        else:
            minutes = round(rng.uniform(MIN_MINUTES, 38.0), 1)
        line = half_steps(minutes * rng.uniform(0.45, 0.95), 5.5, 35.5)
        slate.context.append(
            {
                "player_lookup": player,
                "game_id": game_id,
                "game_date": day,
                "team_abbr": team,
                "opponent_team_abbr": opponent,
                "home_game": is_home,
                "current_points_line": line,
                "avg_minutes_per_game_last_7": minutes,
                "player_status": status_of[i],
                "processed_at": processed_base + timedelta(seconds=rng.randrange(0, 900)),
            }
        )
        slate.player_states[player] = state

        # Phase 4 computes every Phase 3 player; only expected ones count toward readiness.
        if i in missing_features:
            continue
        is_ready = i not in not_production_ready
        quality = rng.uniform(75.0, 100.0) if is_ready else rng.uniform(60.0, 74.99)
        feature_offsets[i] = rng.randrange(1, 900)
        slate.features.append(
            {
                "player_lookup": player,
                "game_id": game_id,
                "game_date": day,
                "features": feature_vector(rng, line, minutes, is_home),
                "feature_names": list(FEATURE_NAMES),
                "feature_count": len(FEATURE_NAMES),
                "feature_version": FEATURE_VERSION,
                "feature_quality_score": round(quality, 2),
                "is_production_ready": is_ready,
                "created_at": None,  # set below, once the last row is known
                "updated_at": None,
            }
        )

        if i in predicted or i in partial:
            slate.predictions.extend(prediction_rows(rng, slate.context[-1], phase4, i in partial))

    # The last feature row lands exactly at phase4_completed_at, the rest just before
    # (or all at it: the offsets are drawn either way, so the other rows stay the same).
    if slate.features:
        feature_offsets[min(feature_offsets, key=feature_offsets.__getitem__)] = 0
        for row, offset in zip(slate.features, feature_offsets.values(), strict=True):
            seconds = 0 if spec.phase4_in_one_write else offset
            row["created_at"] = row["updated_at"] = phase4 - timedelta(seconds=seconds)

    in_flight_batch, expired_batch = rng_uuid(rng), rng_uuid(rng)
    published_at = now - IN_FLIGHT_AGE
    for i in lease_expired:
        slate.ledger.append(
            ledger_row(
                rng,
                day,
                slots[i],
                attempt=1,
                batch_id=expired_batch,
                claimed_at=now - EXPIRED_CLAIM_AGE,
                published_at=None,
                message_id=None,
            )
        )
    for i in in_flight:
        slate.ledger.append(
            ledger_row(
                rng,
                day,
                slots[i],
                attempt=1,
                batch_id=in_flight_batch,
                claimed_at=published_at - timedelta(milliseconds=250),
                published_at=published_at,
                message_id=str(rng.randrange(10**15, 10**16)),
            )
        )
    return slate


def prediction_rows(
    rng: random.Random, context: dict[str, Any], phase4: datetime, partial: bool
) -> list[dict[str, Any]]:
    """A row per required system for a player: all active, or (partial) one left inactive."""
    systems = required_systems()
    line = context["current_points_line"]
    created = phase4 + timedelta(minutes=3, seconds=rng.randrange(0, 2400))
    inactive = rng.choice(systems) if partial else None
    rows = []
    for n, system in enumerate(systems):
        predicted = round(max(0.0, line + rng.gauss(0, 3.0)), 1)
        rows.append(
            {
                "prediction_id": rng_uuid(rng),
                "system_id": system,
                "player_lookup": context["player_lookup"],
                "game_id": context["game_id"],
                "game_date": context["game_date"],
                "predicted_points": predicted,
                "confidence_score": round(rng.uniform(50.0, 95.0), 2),
                "recommendation": recommendation(predicted, line),
                "current_points_line": line,
                "is_active": system != inactive,
                # A deactivated row is an older run's, superseded and not replaced.
                "created_at": (
                    created - timedelta(minutes=30)
                    if system == inactive
                    else created + timedelta(seconds=n)
                ),
            }
        )
    return rows


def ledger_row(
    rng: random.Random,
    game_date: date,
    slot: tuple[str, str, str, str, bool],
    *,
    attempt: int,
    batch_id: str,
    claimed_at: datetime,
    published_at: datetime | None,
    message_id: str | None,
) -> dict[str, Any]:
    """A request_ledger row of an earlier run. Its request_id is an opaque id from the
    slate's rng: the format of real request ids belongs to the dbt marts."""
    player, _, _, game_id, _ = slot
    return {
        "request_id": rng_uuid(rng),
        "game_date": game_date,
        "player_lookup": player,
        "game_id": game_id,
        "attempt": attempt,
        "batch_id": batch_id,
        "trigger_source": TRIGGER_SOURCE,
        "claimed_at": claimed_at,
        "published_at": published_at,
        "message_id": message_id,
    }
