"""Randomized schedules over the dispatcher: a reference model of the contract, a harness
that runs random steps against the real library on one warehouse, and the invariants
checked after every step (tests/test_schedules.py runs them).

A schedule is one game date and 4-8 random steps, then a fixed ending. Steps: Phase 4
waves and rewrites, the completion event (duplicated, late, early, for the wrong date),
Scheduler ticks (start with a schedule time, retry, status; in-process or through
`serve`'s Flask app), push redeliveries, publish failures (refused, or sent with the
acknowledgement lost), worker drains, lost and redelivered requests, a dispatcher that
died after its claim or after its publish, concurrent dispatches in threads, `start
--force`, and time passing. Time passes by ageing: every timestamp of the date (feature
rows, ledger, predictions, alert log) moves back, which is what the views, reading the
wall clock, see as time going by. The ending ages the date past every lease, retries,
drains the worker and checks the status.

The model (``DayModel``) is written from docs/CONTRACT.md and the README alone: it knows
which players are ready, predicted and leased, predicts every claim (its request ids),
outcome, exit code, HTTP status, count and alert, and is compared with the warehouse
after every step. Beside it, invariants read from the warehouse alone: never two ledger
requests of a player inside a lease; every confirmed request carried by exactly one
message; every run-log row's requests_published equal to its batch's confirmed
requests and messages; no prediction key twice.

Every random choice comes from ``random.Random(f"{seed}/{index}")``: a failure names the
seed and the schedule's index, and the steps it ran.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import random
import shutil
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatcher import dbt, ledger
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher, RunResult, request_messages
from dispatcher.project import dbt_vars, required_systems
from dispatcher.sandbox.load import write_duckdb
from dispatcher.sandbox.predict import Delivery, process_batch
from dispatcher.sandbox.slate import SlateSpec, generate_slate
from dispatcher.transport import REQUEST_TOPIC, OutgoingMessage, PublishResult
from dispatcher.warehouse import connect

#: Schedule dates start here: in the past (the 07:00 PT deadline gone, so the SLA rule is
#: fixed), and after 2000-01-01, the earliest date the completion event accepts.
FIRST_DATE = dt.date(2000, 1, 3)
FILE_NAME = "warehouse.duckdb"
#: Where the template keeps each date's Phase 4 rows until a wave writes them.
PHASE4_SOURCE = "schedules.phase4_rows"
#: Feature rows are stamped this long before "now", so that minutes of ageing never put
#: a latency right on its threshold.
WRITE_OFFSET = 20.0
#: Ageing steps, in minutes: across every lease of both templates.
AGES = (1, 1, 2, 3, 5, 9, 10, 11, 30, 61)
DAY_AGE = 24 * 60 + 1

GAME, NO_GAME, NO_SLATE, EMPTY = "game", "no_game", "no_slate", "empty"
RANK = {"ok": 0, "warning": 1, "critical": 2}
STATUS_CODES = {
    "dispatched": 200, "partial": 200, "nothing_pending": 200, "no_games": 200, "ok": 200,
    "sla_breach": 200, "critical": 503, "waiting": 503, "in_progress": 503,
    "publish_failed": 500, "error": 500,
}  # fmt: skip
CHANNELS = ("rec", "pager")


class Violation(AssertionError):
    """The product broke the contract (or the model is wrong): the message says how."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Violation(message)


# --- templates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Day:
    """One date of a template: what the NBA schedule and Phase 3 say about it."""

    game_date: dt.date
    kind: str
    expected: tuple[str, ...] = ()
    #: Every Phase 3 player of the date (Phase 4 writes rows for all of them).
    players: tuple[str, ...] = ()

    @property
    def is_game_day(self) -> bool:
        return self.kind in (GAME, NO_SLATE)


@dataclass(frozen=True)
class Template:
    #: The DuckDB file each harness copies; None: a warehouse used in place (BigQuery).
    path: Path | None
    #: The dbt vars the marts were built with (dbt_project.yml and the overrides).
    vars: dict[str, Any]
    overrides: dict[str, Any]
    days: tuple[Day, ...]
    specials: tuple[Day, ...]
    build_seconds: float


#: The two builds: small slates need a small critical count; the second moves every
#: threshold and both leases (the marts compile the vars in: one build each).
VARS_DEFAULT: dict[str, Any] = {"critical_ready_count": 3}
#: On the BigQuery emulator a dispatch takes about 10 s, so a schedule lasts minutes of
#: wall clock: leases far longer than that, crossed only by ageing (BIGQUERY_AGES).
VARS_BIGQUERY: dict[str, Any] = {
    "critical_ready_count": 3,
    "request_lease_minutes": 45,
    "claim_lease_seconds": 1200,
}
BIGQUERY_AGES = (30, 61)
VARS_MOVED: dict[str, Any] = {
    "critical_ready_count": 5,
    "ready_pct_threshold": 60,
    "ready_count_threshold": 7,
    "request_lease_minutes": 5,
    "claim_lease_seconds": 150,
    "missing_warning_pct": 20,
    "missing_warning_count": 1,
    "coverage_warning_pct": 75,
    "coverage_critical_pct": 30,
    "latency_warning_minutes": 3,
    "latency_critical_minutes": 30,
}


def _schedule_spec(game_date: dt.date, index: int) -> SlateSpec:
    big = index % 10 == 7
    return SlateSpec(
        game_date=game_date, teams=4 if big else 2, players_per_team=5,
        share_out=0.1, share_below_minutes=0.1, share_missing_features=0.0,
        share_production_ready=1.0, seed=index % 13,
    )  # fmt: skip


def build_template(
    workdir: Path, schedules: int, overrides: dict[str, Any], *, specials: int = 3
) -> Template:
    """One DuckDB file with a date per schedule (Phase 3 written, Phase 4 rows held back
    in PHASE4_SOURCE for the waves), a few dates of each special kind, and the models
    built with ``overrides``."""
    last_date = FIRST_DATE + dt.timedelta(days=schedules + 3 * specials + 2)
    if last_date >= dt.date.today() - dt.timedelta(days=1):
        raise ValueError(f"{schedules} schedules need dates up to {last_date}: the model"
                         " assumes every date's 07:00 PT deadline has passed")  # fmt: skip
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    settings = Settings(duckdb_path=workdir / FILE_NAME, dbt_target_path=workdir / "target")
    slates, days, special_days = [], [], []
    for index in range(schedules):
        slate = generate_slate(_schedule_spec(FIRST_DATE + dt.timedelta(days=index), index))
        slates.append(slate)
        days.append(_day(slate, GAME))
    first_special = FIRST_DATE + dt.timedelta(days=schedules + 1)
    for n in range(specials):
        for k, (kind, knobs) in enumerate(
            ((NO_GAME, {"on_schedule": False}), (NO_SLATE, {"phase3_written": False}))
        ):
            day = first_special + dt.timedelta(days=3 * n + k)
            spec = SlateSpec(game_date=day, teams=2, players_per_team=5, seed=n, **knobs)
            slate = generate_slate(spec)
            slates.append(slate)
            special_days.append(_day(slate, kind) if kind == NO_GAME else Day(day, kind))
        special_days.append(Day(first_special + dt.timedelta(days=3 * n + 2), EMPTY))
    write_duckdb(settings.duckdb_path, slates)
    dbt.build(settings, vars=overrides)
    wh = connect(settings)
    try:
        first, last = days[0].game_date, days[-1].game_date
        wh.execute("create schema if not exists schedules")
        wh.execute(
            f"create table {PHASE4_SOURCE} as select * from nba_predictions.ml_feature_store_v2"
            " where game_date between @first and @last",
            {"first": first, "last": last},
        )
        wh.execute(
            "delete from nba_predictions.ml_feature_store_v2"
            " where game_date between @first and @last",
            {"first": first, "last": last},
        )
    finally:
        wh.close()
    return Template(
        path=settings.duckdb_path, vars=template_vars(overrides), overrides=dict(overrides),
        days=tuple(days), specials=tuple(special_days),
        build_seconds=time.perf_counter() - started,
    )  # fmt: skip


def build_bigquery_template(
    settings: Settings, client: Any, schedules: int, overrides: dict[str, Any]
) -> Template:
    """The same dates on the BigQuery emulator, in the settings' project. Only `dbt run`:
    the models' tests run on DuckDB and in the BigQuery tier; here they would cost
    minutes."""
    from dispatcher.sandbox.load import write_bigquery

    started = time.perf_counter()
    assert settings.gcp_project
    slates, days = [], []
    for index in range(schedules):
        slate = generate_slate(_schedule_spec(FIRST_DATE + dt.timedelta(days=index), index))
        slates.append(slate)
        days.append(_day(slate, GAME))
    special = FIRST_DATE + dt.timedelta(days=schedules + 1)
    no_game = generate_slate(SlateSpec(game_date=special, teams=2, players_per_team=5,
                                       on_schedule=False))  # fmt: skip
    write_bigquery(client, settings.gcp_project, [*slates, no_game], timeout=120)
    dbt.run_dbt(settings, ["run"], vars=overrides)
    wh = connect(settings)
    try:
        first, last = days[0].game_date, days[-1].game_date
        wh.execute("create schema if not exists schedules")
        wh.execute(
            f"create or replace table {PHASE4_SOURCE} as select * from"
            " nba_predictions.ml_feature_store_v2 where game_date between @first and @last",
            {"first": first, "last": last},
        )
        wh.execute(
            "delete from nba_predictions.ml_feature_store_v2"
            " where game_date between @first and @last",
            {"first": first, "last": last},
        )
    finally:
        wh.close()
    return Template(
        path=None, vars=template_vars(overrides), overrides=dict(overrides),
        days=tuple(days),
        specials=(_day(no_game, NO_GAME), Day(special + dt.timedelta(days=1), EMPTY)),
        build_seconds=time.perf_counter() - started,
    )  # fmt: skip


def template_vars(overrides: dict[str, Any]) -> dict[str, Any]:
    """The vars the marts are built with: dbt_project.yml's, with the overrides."""
    return {**dbt_vars(), **overrides}


def _day(slate: Any, kind: str) -> Day:
    expected = sorted(
        p for p, state in slate.player_states.items()
        if state not in ("out", "doubtful", "below_minutes")
    )  # fmt: skip
    return Day(slate.game_date, kind, tuple(expected), tuple(sorted(slate.player_states)))


# --- the reference model ------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """The thresholds the marts were built with, in seconds where they are durations."""

    ready_pct: float
    ready_count: int
    critical_count: int
    lease: float
    claim_lease: float
    #: The product has a claim lease and the `in_progress` outcome (dbt var present).
    in_progress: bool
    missing_pct: float
    missing_count: int
    coverage_warning: float
    coverage_critical: float
    latency_warning: float
    latency_critical: float

    @classmethod
    def of(cls, vars: dict[str, Any]) -> Rules:
        lease = float(vars["request_lease_minutes"]) * 60
        has_claim_lease = "claim_lease_seconds" in dbt_vars()
        return cls(
            ready_pct=float(vars["ready_pct_threshold"]),
            ready_count=int(vars["ready_count_threshold"]),
            critical_count=int(vars["critical_ready_count"]),
            lease=lease,
            claim_lease=float(vars["claim_lease_seconds"]) if has_claim_lease else lease,
            in_progress=has_claim_lease,
            missing_pct=float(vars["missing_warning_pct"]),
            missing_count=int(vars["missing_warning_count"]),
            coverage_warning=float(vars["coverage_warning_pct"]),
            coverage_critical=float(vars["coverage_critical_pct"]),
            latency_warning=float(vars["latency_warning_minutes"]) * 60,
            latency_critical=float(vars["latency_critical_minutes"]) * 60,
        )


@dataclass
class Request:
    """A ledger row as the model knows it; times are the day's model time."""

    request_id: str
    player: str
    attempt: int
    batch_id: str
    claimed: float
    published: float | None = None
    message_id: str | None = None


@dataclass
class Message:
    """A message that reached the outbox or the topic."""

    message_id: str
    request_id: str
    player: str
    batch_id: str
    #: The ledger confirmed it (False: the acknowledgement was lost, or the dispatcher died
    #: between its publish and its confirm).
    recorded: bool
    acked: bool = False


@dataclass
class Sent:
    level: str
    kind: str
    at: float


class DayModel:
    """One date as the contract says it behaves. Model time is the monotonic clock plus
    the ageing applied to the date so far."""

    def __init__(self, day: Day, rules: Rules) -> None:
        self.day = day
        self.rules = rules
        self.aged = 0.0
        self.ready: dict[str, bool] = {}
        self.written: dict[str, float] = {}
        self.predicted: set[str] = set()
        self.requests: list[Request] = []
        self.messages: list[Message] = []
        self.sent: dict[tuple[str, str], Sent] = {}
        #: (outcome, exit_code, requests_published, batch_id) per run-log row.
        self.runs: list[tuple[str, int, int, str | None]] = []
        #: What each channel must have received for this date, in order.
        self.alerts: dict[str, list[tuple[str, str, str]]] = {c: [] for c in CHANNELS}

    @property
    def game_date(self) -> dt.date:
        return self.day.game_date

    def now(self) -> float:
        return time.monotonic() + self.aged

    # -- leases and states --

    def live(self, request: Request, t: float) -> bool:
        if request.published is not None:
            return request.published + self.rules.lease > t
        return request.claimed + self.rules.claim_lease > t

    def leased(self, player: str, t: float) -> bool:
        return any(r.player == player and self.live(r, t) for r in self.requests)

    def claim_only(self, player: str, t: float) -> bool:
        """Held only by a live claim nobody confirmed."""
        mine = [r for r in self.requests if r.player == player and self.live(r, t)]
        return bool(mine) and all(r.published is None for r in mine)

    def state(self, player: str, t: float) -> str:
        if player in self.predicted:
            return "predicted"
        if not self.day.is_game_day or not self.ready.get(player, False):
            return "not_ready"
        return "in_flight" if self.leased(player, t) else "pending"

    def states(self, t: float) -> dict[str, str]:
        return {p: self.state(p, t) for p in self.day.expected}

    def pending(self, t: float) -> list[str]:
        return [p for p, s in self.states(t).items() if s == "pending"]

    def counts(self, t: float) -> dict[str, int]:
        states = Counter(self.states(t).values())
        return {
            "players_expected": len(self.day.expected),
            "players_ready": self.ready_count(),
            "players_predicted": states["predicted"],
            "players_in_flight": states["in_flight"],
        }

    def claimed_count(self, t: float) -> int:
        return sum(
            1 for p, s in self.states(t).items() if s == "in_flight" and self.claim_only(p, t)
        )

    # -- readiness, coverage, latency --

    def ready_count(self) -> int:
        return sum(1 for p in self.day.expected if self.ready.get(p, False))

    def is_critical(self) -> bool:
        return self.ready_count() < self.rules.critical_count

    def is_ready(self) -> bool:
        ready, expected = self.ready_count(), len(self.day.expected)
        return (
            expected > 0 and ready * 100 >= self.rules.ready_pct * expected
        ) or ready >= self.rules.ready_count

    def phase4_ready_at(self) -> float | None:
        """The write that brought the needed ready player (the lower of the count and the
        share of expected)."""
        expected = len(self.day.expected)
        needed = min(self.rules.ready_count, math.ceil(self.rules.ready_pct * expected / 100))
        times = sorted(self.written[p] for p in self.day.expected if self.ready.get(p, False))
        index = max(needed, 1) - 1
        return times[index] if len(times) > index else None

    def first_requested_at(self) -> float | None:
        published = [r.published for r in self.requests if r.published is not None]
        return min(published) if published else None

    def level(self, rule: str, t: float) -> str:
        if not self.day.is_game_day:
            return "ok"
        expected = len(self.day.expected)
        states = Counter(self.states(t).values())
        predicted = states["predicted"]
        if rule == "phase4_critical":
            return "critical" if self.is_critical() else "ok"
        if rule == "partial_dispatch":
            missing = expected - predicted - states["in_flight"]
            warn = (
                missing * 100 > self.rules.missing_pct * expected
                or missing > self.rules.missing_count
            )
            return "warning" if warn else "ok"
        if rule == "coverage":
            return self.coverage_level(t)
        if rule == "latency":
            ready_at = self.phase4_ready_at()
            if ready_at is None:
                return "ok"
            first = self.first_requested_at()
            waited = (first if first is not None else t) - ready_at
            if waited > self.rules.latency_critical:
                return "critical"
            return "warning" if waited > self.rules.latency_warning else "ok"
        if rule == "sla_missed":
            # The deadline (07:00 PT on a date years ago) has passed; predictions written
            # now came after it, so the SLA is missed whenever coverage lets it pass.
            return "warning" if self.coverage_level(t) == "ok" else "ok"
        raise AssertionError(rule)

    def coverage_level(self, t: float) -> str:
        if not self.day.is_game_day:
            return "ok"
        expected = len(self.day.expected)
        predicted = sum(1 for s in self.states(t).values() if s == "predicted")
        if predicted == 0 or predicted * 100 < self.rules.coverage_critical * expected:
            return "critical"
        return "warning" if predicted * 100 < self.rules.coverage_warning * expected else "ok"

    # -- claims --

    def next_request_id(self, player: str) -> str:
        attempts = [r.attempt for r in self.requests if r.player == player]
        return f"{self.game_date.isoformat()}/{player}/{max(attempts, default=0) + 1}"

    def claimable(self, t: float, *, refuse_critical: bool, force: bool = False) -> list[str]:
        if not self.day.is_game_day or (refuse_critical and not force and self.is_critical()):
            return []
        if not force:
            return self.pending(t)
        return [
            p for p, s in self.states(t).items()
            if s == "pending" or (s == "predicted" and not self.leased(p, t))
        ]  # fmt: skip

    def claim(self, players: Sequence[str], batch_id: str, t: float) -> list[tuple[str, str]]:
        claimed = []
        for player in sorted(players):
            request_id = self.next_request_id(player)
            attempt = int(request_id.rsplit("/", 1)[1])
            self.requests.append(Request(request_id, player, attempt, batch_id, t))
            claimed.append((player, request_id))
        return claimed

    def settle(self, batch_id: str, published: Sequence[Published], t: float) -> None:
        """The transport's answers for a batch: acknowledged ones confirmed, the rest of the
        batch's claims released; every message that went out is in the outbox."""
        acked = {p.request_id: p.message_id for p in published if p.acknowledged}
        kept = []
        for request in self.requests:
            if request.batch_id == batch_id and request.published is None:
                if request.request_id not in acked:
                    continue  # released
                request.published, request.message_id = t, acked[request.request_id]
            kept.append(request)
        self.requests = kept
        for p in published:
            self.messages.append(
                Message(p.message_id, p.request_id, p.player, batch_id, p.acknowledged)
            )

    # -- runs --

    def expect_dispatch(
        self, *, refuse_critical: bool, force: bool = False, t: float | None = None
    ) -> list[tuple[str, str]]:
        """The (player, request_id) pairs a dispatch claims now."""
        t = self.now() if t is None else t
        players = self.claimable(t, refuse_critical=refuse_critical, force=force)
        return [(p, self.next_request_id(p)) for p in sorted(players)]

    def outcome(
        self, *, claimed: bool, failed: int, refuse_critical: bool, force: bool, t: float
    ) -> tuple[str, int, list[str]]:
        """(outcome, exit code, rules observed) of a dispatch, after it settled."""
        if not claimed and not self.day.is_game_day:
            return "no_games", 0, []
        if not claimed and refuse_critical and not force and self.is_critical():
            return "critical", 3, ["phase4_critical", "latency"]
        rules = ["phase4_critical"] + ([] if failed else ["partial_dispatch"])
        rules += ["publish_failed"] if claimed else []
        rules += ["latency"]
        if failed:
            return "publish_failed", 1, rules
        if not claimed and self.rules.in_progress and self.claimed_count(t) > 0:
            return "in_progress", 5, rules
        if not claimed:
            return "nothing_pending", 0, rules
        return ("dispatched" if self.is_ready() else "partial"), 0, rules

    def observe(self, rules: Sequence[str], t: float, failed: int = 0) -> list[tuple[str, str]]:
        out = []
        for rule in rules:
            if rule == "publish_failed":
                out.append((rule, "critical" if failed else "ok"))
            else:
                out.append((rule, self.level(rule, t)))
        return out

    # -- alerts: the dedup rules --

    def deliver(
        self, observations: Sequence[tuple[str, str]], t: float, repeat: float,
        failing: dict[str, bool], channels: Sequence[str] = CHANNELS,
    ) -> list[tuple[str, tuple[str, str, str]]]:  # fmt: skip
        """What each channel receives for these observations, per (date, rule, channel):
        a breach once when it starts, again when it worsens or after ``repeat`` seconds,
        once resolved when it clears; a failed channel keeps its state and tries again."""
        received = []
        for rule, level in observations:
            for channel in channels:
                last = self.sent.get((rule, channel))
                if level == "ok":
                    if last is None or last.kind == "resolved":
                        continue
                    kind, send, shown = "resolved", True, last.level
                elif last is None or last.kind == "resolved":
                    kind, send, shown = "new", True, level
                elif RANK[level] > RANK[last.level]:
                    kind, send, shown = "worsened", True, level
                else:
                    kind, send, shown = "repeat", t - last.at >= repeat, level
                if not send or failing.get(channel, False):
                    continue
                self.sent[(rule, channel)] = Sent(shown, kind, t)
                self.alerts.setdefault(channel, []).append((rule, shown, kind))
                received.append((channel, (rule, shown, kind)))
        return received

    # -- the worker --

    def unacked(self) -> list[Message]:
        return [m for m in self.messages if not m.acked]

    def process(self, message: Message) -> None:
        """The worker writes a request's predictions when the player's latest Phase 4 row
        is production ready (else it fails the request); acknowledged either way."""
        if self.ready.get(message.player, False):
            self.predicted.add(message.player)
        message.acked = True


# --- transports and channels ---------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """A message that went out: the transport's own message id; whether the dispatcher was
    told it was acknowledged."""

    request_id: str
    player: str
    message_id: str
    acknowledged: bool


class RecordingTransport:
    """The real transport with a failure plan per player: ``fail`` (the message is not
    published: on the outbox, a message the outbox itself refuses) or ``lost`` (published,
    but the dispatcher hears a failure, as after a timeout). Records what went out."""

    def __init__(self, inner: Any, plan: dict[str, str], log: list[Published]) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.plan = plan
        self.log = log

    def publish(
        self, topic: str, messages: Sequence[OutgoingMessage], *, timeout: float
    ) -> list[PublishResult]:
        modes = [self.plan.get(m.attributes.get("player_lookup", ""), "ok") for m in messages]
        if self.kind == "local":
            # The outbox refuses a message without a game_date attribute: a real failure.
            outgoing = [
                OutgoingMessage(m.request_id, m.data, {"request_id": m.request_id})
                if mode == "fail" else m
                for m, mode in zip(messages, modes, strict=True)
            ]  # fmt: skip
        else:
            outgoing = [m for m, mode in zip(messages, modes, strict=True) if mode != "fail"]
        answers = iter(self.inner.publish(topic, outgoing, timeout=timeout))
        results = []
        for message, mode in zip(messages, modes, strict=True):
            if mode == "fail" and self.kind != "local":
                results.append(PublishResult(message.request_id, error="refused (schedule)"))
                continue
            answer = next(answers)
            player = message.attributes["player_lookup"]
            if answer.ok:
                assert answer.message_id is not None
                heard = mode != "lost"
                self.log.append(Published(message.request_id, player, answer.message_id, heard))
                if not heard:
                    answer = PublishResult(message.request_id, error="TimeoutError: ack lost")
            results.append(answer)
        return results

    def close(self) -> None:
        self.inner.close()


class Recorder:
    """An alert channel that records (game date, rule, level, kind), and can fail."""

    def __init__(self) -> None:
        self.received: list[tuple[dt.date, str, str, str]] = []
        self.failing = False
        self._lock = threading.Lock()

    def __call__(self, alert: Any) -> None:
        if self.failing:
            raise RuntimeError("pager down (schedule)")
        with self._lock:
            self.received.append((alert.game_date, alert.rule, alert.level, alert.kind))


# --- where the messages go: the outbox, or a Pub/Sub topic ----------------------------------


@dataclass
class Stored:
    message_id: str
    request_id: str
    player: str
    game_date: dt.date
    batch_id: str
    data: bytes
    acked: bool


class OutboxStore:
    """The local transport's outbox table; the reference worker consumes it."""

    kind = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def transport(self, wh: Any) -> Any:
        from dispatcher.transport_local import LocalOutboxTransport

        return LocalOutboxTransport(wh.outbox())

    def collect(self, wh: Any, total: int) -> None:
        """Nothing to fetch: the outbox is a table."""

    def messages(self, wh: Any, game_date: dt.date) -> list[Stored]:
        rows = wh.query(
            "select message_id, attributes, data, acked_at from nba_orchestration.request_outbox"
            " where game_date = @game_date and topic = @topic order by message_id",
            {"game_date": game_date, "topic": REQUEST_TOPIC},
        )
        out = []
        for row in rows:
            body, attributes = json.loads(row["data"]), json.loads(row["attributes"])
            expect(body["request_id"] == attributes["request_id"], f"message {row} ids disagree")
            out.append(Stored(row["message_id"], attributes["request_id"],
                              attributes["player_lookup"], game_date, body["batch_id"],
                              row["data"].encode(), row["acked_at"] is not None))  # fmt: skip
        return out

    def drain(self, wh: Any, count: int) -> int:
        """The reference worker, until it processed ``count`` requests (or went idle)."""
        from dispatcher.sandbox.worker import run_worker

        if count == 0:
            return 0
        return run_worker(self.settings, max_messages=count, idle_exit_seconds=5).received

    def ack_without_writing(self, wh: Any, message_ids: Sequence[str]) -> None:
        from dispatcher.transport_local import ack_outbox

        ack_outbox(wh.outbox(), message_ids)

    def redeliver(self, wh: Any, stored: Sequence[Stored]) -> None:
        process_batch(wh, [Delivery(s.data, s.message_id) for s in stored])


class TopicStore:
    """A Pub/Sub topic: a pull subscription of the harness's own receives every message
    (acknowledged at once, kept here); the worker's batch logic processes them."""

    kind = "pubsub"

    def __init__(self, project: str, subscription: str, publish_timeout: float = 5.0) -> None:
        from google.cloud import pubsub_v1

        from dispatcher.transport_pubsub import subscription_path

        self.project = project
        self.publish_timeout = publish_timeout
        self.path = subscription_path(project, subscription)
        self.subscriber = pubsub_v1.SubscriberClient()
        self.received: list[Stored] = []

    def transport(self, wh: Any) -> Any:
        from dispatcher.transport_pubsub import PubSubTransport

        return PubSubTransport(self.project, publish_timeout=self.publish_timeout)

    def collect(self, wh: Any, total: int, *, within: float = 15.0, linger: float = 0.0) -> None:
        """Pull until ``total`` messages arrived in all (then ``linger`` s more, to catch a
        message too many)."""
        from google.api_core import exceptions

        deadline = time.monotonic() + within
        settle: float | None = None
        while True:
            now = time.monotonic()
            if len(self.received) >= total:
                settle = now + linger if settle is None else settle
                if now >= settle:
                    return
            if now >= deadline:
                return
            wait = max(0.2, min(2.0, (settle or deadline) - now))
            try:
                response = self.subscriber.pull(
                    request={"subscription": self.path, "max_messages": 1000},
                    timeout=wait, retry=None,
                )  # fmt: skip
            except exceptions.DeadlineExceeded:
                continue
            items = list(response.received_messages)
            if not items:
                continue
            self.subscriber.acknowledge(
                request={"subscription": self.path, "ack_ids": [i.ack_id for i in items]},
                timeout=10,
            )
            for item in items:
                message = item.message
                attributes = dict(message.attributes)
                body = json.loads(message.data)
                expect(body["request_id"] == attributes["request_id"], f"{body} ids disagree")
                self.received.append(Stored(
                    message.message_id, attributes["request_id"], attributes["player_lookup"],
                    dt.date.fromisoformat(attributes["game_date"]), body["batch_id"],
                    bytes(message.data), False,
                ))  # fmt: skip

    def messages(self, wh: Any, game_date: dt.date) -> list[Stored]:
        return sorted(
            (s for s in self.received if s.game_date == game_date), key=lambda s: s.message_id
        )

    def drain(self, wh: Any, count: int) -> int:
        waiting = [s for s in self.received if not s.acked]
        if waiting:
            process_batch(wh, [Delivery(s.data, s.message_id) for s in waiting])
        for stored in waiting:
            stored.acked = True
        return len(waiting)

    def ack_without_writing(self, wh: Any, message_ids: Sequence[str]) -> None:
        for stored in self.received:
            if stored.message_id in message_ids:
                stored.acked = True

    def redeliver(self, wh: Any, stored: Sequence[Stored]) -> None:
        process_batch(wh, [Delivery(s.data, s.message_id) for s in stored])

    def close(self) -> None:
        self.subscriber.close()


# --- the harness ----------------------------------------------------------------------------


@dataclass
class Figures:
    schedules: int = 0
    steps: int = 0
    dispatches: int = 0
    requests_published: int = 0
    messages_resent: int = 0
    alerts_checked: int = 0
    concurrent_groups: int = 0
    serve_calls: int = 0
    kinds: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)

    def add(self, other: Figures) -> None:
        for name in (
            "schedules",
            "steps",
            "dispatches",
            "requests_published",
            "messages_resent",
            "alerts_checked",
            "concurrent_groups",
            "serve_calls",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))  # fmt: skip
        self.kinds.update(other.kinds)
        self.outcomes.update(other.outcomes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schedules": self.schedules, "steps": self.steps, "dispatches": self.dispatches,
            "requests_published": self.requests_published,
            "messages_resent": self.messages_resent, "alerts_checked": self.alerts_checked,
            "concurrent_groups": self.concurrent_groups, "serve_calls": self.serve_calls,
            "kinds": dict(self.kinds), "outcomes": dict(self.outcomes),
        }  # fmt: skip


class Harness:
    """One warehouse copy, the models of every date it touched, and the steps."""

    def __init__(
        self, template: Template, workdir: Path, *, store: Any = None,
        warehouse: Settings | None = None, **settings: Any,
    ) -> None:  # fmt: skip
        """A private copy of the template in ``workdir`` (or ``warehouse``, used in place);
        ``store`` (default: the outbox) and Settings changes (e.g. the pubsub transport)."""
        self.template = template
        self.rules = Rules.of(template.vars)
        if warehouse is None:
            assert template.path is not None
            workdir.mkdir(parents=True, exist_ok=True)
            path = workdir / FILE_NAME
            shutil.copy(template.path, path)
            warehouse = Settings(duckdb_path=path, dbt_target_path=workdir / "target")
        self.settings = warehouse.with_(**settings)
        self.store = store or OutboxStore(self.settings)
        self._wh: Any = None
        self.models: dict[dt.date, DayModel] = {
            d.game_date: DayModel(d, self.rules) for d in template.specials
        }
        self.channels = {name: Recorder() for name in CHANNELS}
        self.plan: dict[str, str] = {}
        self.published: list[Published] = []
        self.repeat_hours = 24.0
        self.figures = Figures()
        self._clock = dt.datetime.now(dt.UTC)
        self._dispatcher: Dispatcher | None = None
        self._app: Any = None
        self.wait_minutes = 30.0
        #: The ageing steps drawn, in minutes.
        self.ages: tuple[int, ...] = AGES

    # -- plumbing --

    @property
    def wh(self) -> Any:
        if self._wh is None:
            self._wh = connect(self.settings)
            if self._wh.kind == "duckdb":
                # One thread per query for every connection of this process to the file
                # (they share its database while this handle is open): the queries are
                # tiny, and the schedules run in one process per core.
                self._wh.execute("set threads = 1")
        return self._wh

    def release(self) -> None:
        """Close the harness's own handle (a DuckDB file admits one process at a time)."""
        if self._wh is not None:
            self._wh.close()
            self._wh = None

    def close(self) -> None:
        self.release()

    def model(self, day: Day) -> DayModel:
        if day.game_date not in self.models:
            self.models[day.game_date] = DayModel(day, self.rules)
        return self.models[day.game_date]

    def begin(self, repeat_hours: float, wait_minutes: float) -> None:
        """A new schedule: its settings (alert repeat, the /start wait)."""
        self.repeat_hours, self.wait_minutes = repeat_hours, wait_minutes
        assert self.wh is not None  # open first: the dispatcher's connections share it
        self._dispatcher = Dispatcher(
            self.settings.with_(alert_repeat_hours=repeat_hours),
            transport_factory=self._transport, channels=dict(self.channels),
        )  # fmt: skip
        self._app = None

    @property
    def dispatcher(self) -> Dispatcher:
        assert self._dispatcher is not None
        return self._dispatcher

    def _transport(self, wh: Any) -> RecordingTransport:
        return RecordingTransport(self.store.transport(wh), dict(self.plan), self.published)

    @property
    def app(self) -> Any:
        if self._app is None:
            from dispatcher.serve import ServeSettings, create_app

            self._app = create_app(
                self.settings, dispatcher=self.dispatcher,
                push=ServeSettings(start_wait_minutes=self.wait_minutes),
                now=lambda: self._clock,
            ).test_client()  # fmt: skip
        return self._app

    # -- steps that write the upstream tables or move time --

    def write_phase4(self, model: DayModel, players: Sequence[str], ready: bool) -> None:
        """Phase 4 writes (or rewrites) these players' rows, production ready or not."""
        if not players:
            return
        t = model.now() - WRITE_OFFSET  # the model's time of the stamp below
        written = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=WRITE_OFFSET)
        member = (
            "player_lookup in unnest(@players)"
            if self.wh.kind == "bigquery"
            else "player_lookup in (select unnest(@players))"
        )
        self.wh.execute(
            "insert into nba_predictions.ml_feature_store_v2 (player_lookup, game_id,"
            " game_date, features, feature_names, feature_count, feature_version,"
            " feature_quality_score, is_production_ready, created_at, updated_at)"
            " select player_lookup, game_id, game_date, features, feature_names,"
            " feature_count, feature_version, feature_quality_score, @ready, @written_at,"
            f" @written_at from {PHASE4_SOURCE}"
            f" where game_date = @game_date and {member}",
            {"game_date": model.game_date, "players": sorted(players), "ready": ready,
             "written_at": written},
        )  # fmt: skip
        for player in players:
            model.ready[player] = ready
            model.written[player] = t

    def withdraw(self, model: DayModel, players: Sequence[str], system: str | None) -> None:
        """Phase 5 deactivates these players' predictions (of one system, or all): they
        are no longer predicted."""
        if not players:
            return
        member = (
            "player_lookup in unnest(@players)"
            if self.wh.kind == "bigquery"
            else "player_lookup in (select unnest(@players))"
        )
        only = " and system_id = @system" if system else ""
        self.wh.execute(
            "update nba_predictions.player_prop_predictions set is_active = false"
            f" where game_date = @game_date and {member}{only}",
            {"game_date": model.game_date, "players": sorted(players), "system": system},
        )
        model.predicted -= set(players)

    AGED = (
        ("nba_predictions.ml_feature_store_v2", ("created_at", "updated_at")),
        ("nba_orchestration.request_ledger", ("claimed_at", "published_at")),
        ("nba_predictions.player_prop_predictions", ("created_at",)),
        ("nba_orchestration.alert_log", ("created_at",)),
    )

    def age(self, model: DayModel, seconds: float) -> None:
        """Time passes for the date: every timestamp the marts and the alert state read
        moves back by ``seconds``."""
        for table, columns in self.AGED:
            if self.wh.kind == "bigquery":
                moved = ", ".join(
                    f"{c} = timestamp_sub({c}, interval @seconds second)" for c in columns
                )
            else:
                moved = ", ".join(f"{c} = {c} - to_seconds(@seconds)" for c in columns)
            self.wh.execute(
                f"update {table} set {moved} where game_date = @game_date",
                {"game_date": model.game_date, "seconds": int(seconds)},
            )
        model.aged += seconds

    # -- dispatcher calls --

    def call(
        self, model: DayModel, command: str, *, via: str = "lib",
        plan: dict[str, str] | None = None,
        scheduled_minutes_ago: float | None = None, force: bool = False,
        redeliveries: int = 1, pager_down: bool = False,
    ) -> list[str]:  # fmt: skip
        """One dispatcher call (or one push delivered ``redeliveries`` times) on the date,
        predicted by the model and checked against it. The outcomes."""
        outcomes = []
        for _ in range(redeliveries):
            outcomes.append(self._one_call(
                model, command, via=via, plan=plan or {}, force=force, pager_down=pager_down,
                scheduled_minutes_ago=scheduled_minutes_ago,
            ))  # fmt: skip
        return outcomes

    def _one_call(
        self, model: DayModel, command: str, *, via: str, plan: dict[str, str], force: bool,
        scheduled_minutes_ago: float | None, pager_down: bool,
    ) -> str:  # fmt: skip
        refuse = command in ("trigger", "start")
        t0 = model.now()
        waiting = False
        if command == "start" and not force:
            waiting = (
                model.day.is_game_day and not model.is_ready()
                and scheduled_minutes_ago is not None
                and scheduled_minutes_ago < self.wait_minutes
            )  # fmt: skip
        if command == "status" or waiting:
            claim: list[tuple[str, str]] = []
        else:
            claim = model.expect_dispatch(refuse_critical=refuse, force=force, t=t0)
        self.plan = {p: plan[p] for p, _ in claim if p in plan}
        self.channels["pager"].failing = pager_down
        self.published.clear()
        result, http = self._invoke(model, command, via, force, scheduled_minutes_ago)
        self.plan = {}
        self.channels["pager"].failing = False
        t = model.now()
        tag = f"{command} via {via} on {model.game_date}"
        expect(result.outcome != "error", f"{tag}: error {result.error}")
        sent = list(self.published)
        # The claim: exactly the pending players, with the request ids the contract gives.
        expect(
            sorted((p.player, p.request_id) for p in sent)
            == sorted((player, rid) for player, rid in claim if plan.get(player) != "fail"),
            f"{tag}: published {sorted((p.player, p.request_id) for p in sent)},"
            f" the model claims {claim} (plan {plan})",
        )
        failed = sum(1 for player, _ in claim if plan.get(player, "ok") != "ok")
        if claim:
            expect(result.batch_id is not None, f"{tag}: claimed without a batch id")
            model.claim([p for p, _ in claim], result.batch_id or "", t0)
            model.settle(result.batch_id or "", sent, t)
        else:
            expect(result.batch_id is None and not sent, f"{tag}: nothing to claim, got {result}")
        if command == "status":
            if not model.day.is_game_day:
                outcome, code, rules = "no_games", 0, []
            else:
                ok = model.coverage_level(t) == "ok"
                outcome, code = ("ok", 0) if ok else ("sla_breach", 4)
                rules = ["coverage", "latency", "sla_missed"]
        elif waiting:
            outcome, code, rules = "waiting", 3, []
        else:
            outcome, code, rules = model.outcome(
                claimed=bool(claim), failed=failed, refuse_critical=refuse, force=force, t=t
            )
        expect(
            (result.outcome, result.exit_code) == (outcome, code),
            f"{tag}: {result.outcome} (exit {result.exit_code}), the model says {outcome}"
            f" (exit {code}); error {result.error}",
        )
        published = sum(1 for p in sent if p.acknowledged)
        expect(
            (result.requests_published, result.requests_failed) == (published, failed),
            f"{tag}: published {result.requests_published} failed {result.requests_failed},"
            f" the model says {published} and {failed}",
        )
        if outcome != "no_games":
            counts = model.counts(t)
            got = {name: getattr(result, name) for name in counts}
            expect(got == counts, f"{tag}: counts {got}, the model says {counts}")
        if outcome == "in_progress":
            expect(
                result.players_claimed == model.claimed_count(t)
                and result.retry_after_seconds is not None
                and 1 <= result.retry_after_seconds <= self.rules.claim_lease + 1,
                f"{tag}: in_progress with {result.players_claimed} claimed, retry after"
                f" {result.retry_after_seconds} s",
            )
        if http is not None:
            status, headers = http
            expect(status == STATUS_CODES[outcome], f"{tag}: HTTP {status} for {outcome}")
            if outcome in ("waiting", "in_progress"):
                expect("Retry-After" in headers, f"{tag}: 503 {outcome} without Retry-After")
        model.runs.append((result.outcome, result.exit_code, result.requests_published,
                           result.batch_id))  # fmt: skip
        model.deliver(
            model.observe(rules, t, failed),
            t,
            self.repeat_hours * 3600,
            {"pager": pager_down},
        )
        self.figures.dispatches += 1
        self.figures.requests_published += published
        self.figures.messages_resent += sum(1 for p in sent if not p.acknowledged)
        self.figures.outcomes[outcome] += 1
        self.figures.serve_calls += via == "serve"
        return outcome

    def _invoke(
        self, model: DayModel, command: str, via: str, force: bool,
        scheduled_minutes_ago: float | None,
    ) -> tuple[RunResult, tuple[int, dict[str, str]] | None]:  # fmt: skip
        day = model.game_date
        now = dt.datetime.now(dt.UTC)
        scheduled = (
            None if scheduled_minutes_ago is None
            else now - dt.timedelta(minutes=scheduled_minutes_ago)
        )  # fmt: skip
        try:
            if via == "serve":
                return self._serve(model, command, scheduled, now)
            if command == "trigger":
                result = self.dispatcher.trigger(day, trigger_source="pubsub")
            elif command == "retry":
                result = self.dispatcher.retry(day, trigger_source="scheduler")
            elif command == "status":
                result = self.dispatcher.status(day, trigger_source="scheduler")
            elif force:
                result = self.dispatcher.start(day, wait_minutes=0, force=True)
            else:
                result = self.dispatcher.start_check(
                    day, scheduled_at=scheduled, wait_minutes=self.wait_minutes, now=now
                )
        finally:
            self.store.collect(self.wh, self._total_messages() + len(self.published))
        return result, None

    def _serve(
        self, model: DayModel, command: str, scheduled: dt.datetime | None, now: dt.datetime
    ) -> tuple[RunResult, tuple[int, dict[str, str]]]:
        day = model.game_date.isoformat()
        self._clock = now
        headers = {}
        if command == "trigger":
            event = {"event_type": "phase4_complete", "processor": "ml_feature_store_v2",
                     "game_date": day, "players_ready": model.ready_count()}  # fmt: skip
            body: dict[str, Any] = {
                "message": {
                    "data": base64.b64encode(json.dumps(event).encode()).decode(),
                    "attributes": {"game_date": day}, "messageId": f"m-{day}",
                    "message_id": f"m-{day}", "publishTime": "2026-11-28T08:31:00Z",
                },
                "subscription": "projects/nba/subscriptions/nba-phase5-trigger-sub",
            }  # fmt: skip
        else:
            body = {"game_date": day}
            if scheduled is not None:
                headers["X-CloudScheduler-ScheduleTime"] = scheduled.isoformat()
        response = self.app.post(f"/{command}", json=body, headers=headers)
        self.store.collect(self.wh, self._total_messages() + len(self.published))
        payload = response.get_json()
        expect(isinstance(payload, dict), f"/{command}: not JSON: {response.data[:200]!r}")
        result = RunResult(
            game_date=model.game_date, command=command, trigger_source=payload["trigger_source"],
            outcome=payload["outcome"], exit_code=_exit_code(payload["outcome"]),
            players_expected=payload["players_expected"],
            players_ready=payload["players_ready"],
            players_predicted=payload["players_predicted"],
            players_in_flight=payload["players_in_flight"],
            requests_published=payload["requests_published"],
            requests_failed=payload.get("requests_failed", 0), batch_id=payload["batch_id"],
            error=payload.get("error"), retry_after_seconds=payload.get("retry_after_seconds"),
            players_claimed=payload.get("players_claimed", 0),
        )  # fmt: skip
        return result, (response.status_code, dict(response.headers))

    def _total_messages(self) -> int:
        return sum(len(m.messages) for m in self.models.values())

    def concurrent(
        self, model: DayModel, calls: Sequence[tuple[str, str, float | None]]
    ) -> list[str]:
        """Dispatcher calls in threads released together: (command, via, scheduled
        minutes ago). One of them claims what is pending; each other finds it in flight."""
        t0 = model.now()
        ready = model.is_ready()

        def waits(command: str, ago: float | None) -> bool:
            return (
                command == "start" and model.day.is_game_day and not ready
                and ago is not None and ago < self.wait_minutes
            )  # fmt: skip

        claimers = [
            i for i, (command, _, ago) in enumerate(calls)
            if not waits(command, ago)
            and model.expect_dispatch(refuse_critical=command != "retry", t=t0)
        ]  # fmt: skip
        claim = model.expect_dispatch(refuse_critical=False, t=t0)
        self.published.clear()
        results: list[Any] = [None] * len(calls)
        barrier = threading.Barrier(len(calls))
        now = dt.datetime.now(dt.UTC)

        def run(index: int, command: str, via: str, ago: float | None) -> None:
            try:
                barrier.wait(timeout=60)
                scheduled = None if ago is None else now - dt.timedelta(minutes=ago)
                if via == "serve":
                    results[index] = self._serve_threaded(model, command, scheduled, now)
                elif command == "trigger":
                    results[index] = (
                        self.dispatcher.trigger(model.game_date, trigger_source="pubsub"),
                        None,
                    )
                elif command == "retry":
                    results[index] = (self.dispatcher.retry(model.game_date), None)
                else:
                    results[index] = (self.dispatcher.start_check(
                        model.game_date, scheduled_at=scheduled,
                        wait_minutes=self.wait_minutes, now=now,
                    ), None)  # fmt: skip
            except BaseException as exc:  # reported below
                results[index] = exc

        threads = [
            threading.Thread(target=run, args=(i, *call), daemon=True)
            for i, call in enumerate(calls)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        expect(not any(t.is_alive() for t in threads), "a concurrent dispatcher hung")
        self.store.collect(self.wh, self._total_messages() + len(self.published))
        t = model.now()
        tag = f"concurrent {calls} on {model.game_date}"
        errors = [r for r in results if isinstance(r, BaseException)]
        expect(not errors, f"{tag}: {errors}")
        sent = list(self.published)
        expect(
            sorted((p.player, p.request_id) for p in sent) == sorted(claim if claimers else []),
            f"{tag}: published {[(p.player, p.request_id) for p in sent]}, the model"
            f" claims {claim if claimers else []} once",
        )
        winners = [r for r, _ in results if r.batch_id is not None]
        expect(len(winners) == (1 if claimers and claim else 0),
               f"{tag}: {len(winners)} calls claimed")  # fmt: skip
        if winners:
            model.claim([p for p, _ in claim], winners[0].batch_id, t0)
            model.settle(winners[0].batch_id, sent, t)
        observations: list[tuple[str, str]] = []
        outcomes = []
        for (command, via, ago), (result, http) in zip(calls, results, strict=True):
            refuse = command != "retry"
            won = result.batch_id is not None
            if waits(command, ago):
                allowed = {("waiting", 3)}
                rules: list[str] = []
            else:
                outcome, code, rules = model.outcome(
                    claimed=won, failed=0, refuse_critical=refuse, force=False, t=t
                )
                allowed = {(outcome, code)}
                if not won and outcome == "nothing_pending" and self.rules.in_progress:
                    allowed.add(("in_progress", 5))  # the winner had not confirmed yet
                if not won and outcome == "in_progress":
                    allowed.add(("nothing_pending", 0))  # its claims confirmed meanwhile
            expect(
                (result.outcome, result.exit_code) in allowed,
                f"{tag}: {command} via {via}: {result.outcome} (exit {result.exit_code}),"
                f" the model allows {sorted(allowed)}; error {result.error}",
            )
            if http is not None:
                expect(http[0] == STATUS_CODES[result.outcome],
                       f"{tag}: HTTP {http[0]} for {result.outcome}")  # fmt: skip
            observations += model.observe(rules, t)
            model.runs.append((result.outcome, result.exit_code, result.requests_published,
                               result.batch_id))  # fmt: skip
            outcomes.append(result.outcome)
            self.figures.outcomes[result.outcome] += 1
        # Every call observed the same levels (each after the claim, if any): the alerts
        # are those of the calls one after another, in whatever order they ran.
        before = {c: len(model.alerts[c]) for c in CHANNELS}
        model.deliver(observations, t, self.repeat_hours * 3600, {})
        for channel in CHANNELS:
            expected_new = model.alerts[channel][before[channel] :]
            got = [a[1:] for a in self.channels[channel].received if a[0] == model.game_date]
            got_new = got[before[channel] :]
            expect(
                Counter(got_new) == Counter(expected_new),
                f"{tag}: channel {channel} received {got_new}, the model says {expected_new}",
            )
            model.alerts[channel][before[channel] :] = got_new  # the order they ran in
        self.figures.dispatches += len(calls)
        self.figures.concurrent_groups += 1
        self.figures.requests_published += len(sent)
        self.figures.serve_calls += sum(1 for _, via, _ in calls if via == "serve")
        return outcomes

    def _serve_threaded(
        self, model: DayModel, command: str, scheduled: dt.datetime | None, now: dt.datetime
    ) -> tuple[RunResult, tuple[int, dict[str, str]]]:
        # The Flask test client is not shared between threads: one app each.
        from dispatcher.serve import ServeSettings, create_app

        client = create_app(
            self.settings, dispatcher=self.dispatcher,
            push=ServeSettings(start_wait_minutes=self.wait_minutes), now=lambda: now,
        ).test_client()  # fmt: skip
        day = model.game_date.isoformat()
        if command == "trigger":
            event = {"event_type": "phase4_complete", "game_date": day}
            body: dict[str, Any] = {"message": {
                "data": base64.b64encode(json.dumps(event).encode()).decode(),
                "messageId": f"m-{day}", "message_id": f"m-{day}",
            }}  # fmt: skip
            headers: dict[str, str] = {}
        else:
            body = {"game_date": day}
            headers = {} if scheduled is None else {
                "X-CloudScheduler-ScheduleTime": scheduled.isoformat()
            }  # fmt: skip
        response = client.post(f"/{command}", json=body, headers=headers)
        payload = response.get_json()
        result = RunResult(
            game_date=model.game_date, command=command, trigger_source=payload["trigger_source"],
            outcome=payload["outcome"], exit_code=_exit_code(payload["outcome"]),
            requests_published=payload["requests_published"], batch_id=payload["batch_id"],
            error=payload.get("error"),
        )  # fmt: skip
        return result, (response.status_code, dict(response.headers))

    # -- a dispatcher that died --

    def crash(self, model: DayModel, *, after_publish: bool) -> list[str]:
        """What a dispatcher killed after its claim leaves (``after_publish``: killed after
        its publish went out, before its confirm): claims nobody confirms."""
        t = model.now()
        claim = model.expect_dispatch(refuse_critical=False, t=t)
        batch_id = f"killed-{uuid.uuid4().hex[:12]}"
        claimed = ledger.claim(self.wh, model.game_date, batch_id=batch_id,
                               trigger_source="pubsub")  # fmt: skip
        expect(
            sorted((r["player_lookup"], r["request_id"]) for r in claimed) == claim,
            f"crash claim on {model.game_date}: claimed"
            f" {[(r['player_lookup'], r['request_id']) for r in claimed]}, the model says {claim}",
        )
        model.claim([p for p, _ in claim], batch_id, t)
        if after_publish and claimed:
            messages = request_messages(claimed, batch_id, "pubsub", _iso_now())
            transport = self.store.transport(self.wh)
            try:
                answers = transport.publish(REQUEST_TOPIC, messages, timeout=10)
            finally:
                transport.close()
            expect(all(a.ok for a in answers), f"the crashed publish failed: {answers}")
            for message, answer in zip(messages, answers, strict=True):
                assert answer.message_id is not None
                model.messages.append(Message(
                    answer.message_id, message.request_id,
                    message.attributes["player_lookup"], batch_id, recorded=False,
                ))  # fmt: skip
            self.store.collect(self.wh, self._total_messages())
        return [rid for _, rid in claim]

    def adopt_crash(self, model: DayModel, claimed_at: float) -> str | None:
        """A real dispatcher process was killed after its claim: the ledger's unconfirmed
        rows the model does not know become its claim (checked to be the model's)."""
        known = {r.request_id for r in model.requests}
        rows = [r for r in ledger.requests(self.wh, model.game_date)
                if r["request_id"] not in known]  # fmt: skip
        claim = model.expect_dispatch(refuse_critical=True, t=claimed_at)
        expect(
            sorted((r["player_lookup"], r["request_id"]) for r in rows) == claim
            and all(r["published_at"] is None for r in rows),
            f"killed dispatcher on {model.game_date}: left {rows}, the model says {claim}",
        )
        if not rows:
            return None
        batch_id = str(rows[0]["batch_id"])
        model.claim([p for p, _ in claim], batch_id, claimed_at)
        return batch_id

    # -- the worker --

    def drain(self, model: DayModel) -> int:
        waiting = [m for day in self.models.values() for m in day.unacked()]
        done = self.store.drain(self.wh, len(waiting))
        expect(done == len(waiting), f"the worker took {done} requests, {len(waiting)} waited")
        for day in self.models.values():
            for message in day.unacked():
                day.process(message)
        return done

    def lose(self, model: DayModel, rng: random.Random) -> list[str]:
        """The worker took some requests and died before writing: acknowledged, never
        predicted (their leases must run out before they are requested again)."""
        waiting = model.unacked()
        lost = rng.sample(waiting, rng.randint(1, len(waiting))) if waiting else []
        self.store.ack_without_writing(self.wh, [m.message_id for m in lost])
        for message in lost:
            message.acked = True
        return [m.request_id for m in lost]

    def redeliver(self, model: DayModel, rng: random.Random) -> list[str]:
        """Requests the worker already processed arrive again: written twice, idempotently."""
        done = [m for m in model.messages if m.acked]
        again = rng.sample(done, rng.randint(1, len(done))) if done else []
        if again:
            by_id = {s.message_id: s for s in self.store.messages(self.wh, model.game_date)}
            self.store.redeliver(self.wh, [by_id[m.message_id] for m in again])
            for message in again:
                model.process(message)
        return [m.request_id for m in again]

    # -- invariants --

    def check(self, model: DayModel) -> None:
        """The warehouse against the model, and the invariants that need no model."""
        day = model.game_date
        rows = self.wh.query(
            "select request_id, player_lookup, attempt, batch_id, claimed_at, published_at,"
            " message_id from nba_orchestration.request_ledger where game_date = @game_date",
            {"game_date": day},
        )
        stored = self.store.messages(self.wh, day)
        runs = self.wh.query(
            "select outcome, exit_code, requests_published, batch_id"
            " from nba_orchestration.dispatch_runs where game_date = @game_date",
            {"game_date": day},
        )
        predictions = self.wh.query(
            "select player_lookup, system_id, count(*) as n,"
            " count(case when is_active then 1 end) as active"
            " from nba_predictions.player_prop_predictions where game_date = @game_date"
            " group by player_lookup, system_id",
            {"game_date": day},
        )
        check_invariants(day, rows, stored, runs, predictions, self.rules)
        # The model.
        got = sorted((r["request_id"], r["batch_id"], r["published_at"] is not None,
                      r["message_id"]) for r in rows)  # fmt: skip
        want = sorted((r.request_id, r.batch_id, r.published is not None, r.message_id)
                      for r in model.requests)  # fmt: skip
        expect(got == want, f"{day}: ledger {got}, the model says {want}")
        got_m = sorted((s.message_id, s.request_id, s.acked) for s in stored)
        want_m = sorted((m.message_id, m.request_id, m.acked) for m in model.messages)
        expect(got_m == want_m, f"{day}: messages {got_m}, the model says {want_m}")
        systems = set(required_systems())
        per_player: dict[str, set[str]] = {}
        for row in predictions:
            if row["active"]:
                per_player.setdefault(row["player_lookup"], set()).add(row["system_id"])
        predicted = {p for p, s in per_player.items() if s >= systems}
        expect(
            predicted & set(model.day.players) == model.predicted,
            f"{day}: predicted {sorted(predicted)}, the model says {sorted(model.predicted)}",
        )
        got_runs = Counter((r["outcome"], r["exit_code"], r["requests_published"],
                            r["batch_id"]) for r in runs)  # fmt: skip
        expect(got_runs == Counter(model.runs),
               f"{day}: run log {got_runs}, the model says {Counter(model.runs)}")  # fmt: skip
        for channel in CHANNELS:
            got_a = [a[1:] for a in self.channels[channel].received if a[0] == day]
            expect(
                got_a == model.alerts[channel],
                f"{day}: channel {channel} received {got_a}, the model says"
                f" {model.alerts[channel]}",
            )

    def check_marts(self, model: DayModel) -> None:
        """Every expected player's state in fct_player_dispatch_state is the model's."""
        rows = self.wh.query(
            "select player_lookup, state from nba_orchestration.fct_player_dispatch_state"
            " where game_date = @game_date",
            {"game_date": model.game_date},
        )
        t = model.now()
        got = {r["player_lookup"]: r["state"] for r in rows}
        expect(got == model.states(t), f"{model.game_date}: states {got},"
               f" the model says {model.states(t)}")  # fmt: skip
        sent = self.wh.query(
            "select channel, count(*) as n from nba_orchestration.alert_log"
            " where game_date = @game_date and status = 'sent' group by channel",
            {"game_date": model.game_date},
        )
        got_sent = {r["channel"]: r["n"] for r in sent}
        want_sent = {c: len(a) for c, a in model.alerts.items() if a}
        expect(got_sent == want_sent, f"{model.game_date}: alert_log sent {got_sent},"
               f" the channels received {want_sent}")  # fmt: skip
        self.figures.alerts_checked += sum(want_sent.values())


def check_invariants(
    day: dt.date,
    rows: list[dict[str, Any]],
    stored: list[Stored],
    runs: list[dict[str, Any]],
    predictions: list[dict[str, Any]],
    rules: Rules,
) -> None:
    """What the warehouse must hold whatever happened, read from it alone."""
    # 1. Never two requests of a player inside a lease: each request of a player is claimed
    #    after the lease of the one before ended (a published request's lease runs from
    #    its publish, an unconfirmed claim's from its claim).
    by_player: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_player.setdefault(row["player_lookup"], []).append(row)
    for player, mine in by_player.items():
        mine.sort(key=lambda r: (r["claimed_at"], r["attempt"]))
        for before, after in zip(mine, mine[1:], strict=False):
            if before["published_at"] is not None:
                ends = before["published_at"] + dt.timedelta(seconds=rules.lease)
            else:
                ends = before["claimed_at"] + dt.timedelta(seconds=rules.claim_lease)
            expect(
                after["claimed_at"] >= ends,
                f"{day}: {player} requested twice inside a lease: {before['request_id']}"
                f" (lease to {ends}) and {after['request_id']} claimed {after['claimed_at']}",
            )
        attempts = [r["attempt"] for r in mine]
        expect(len(set(attempts)) == len(attempts), f"{day}: {player} attempts {attempts}")
    # 2. A confirmed request is carried by exactly one message, with its id and batch.
    by_message = {s.message_id: s for s in stored}
    expect(len(by_message) == len(stored), f"{day}: a message id twice in {stored}")
    confirmed = [r for r in rows if r["published_at"] is not None]
    for row in confirmed:
        message = by_message.get(row["message_id"])
        expect(
            message is not None
            and (message.request_id, message.batch_id) == (row["request_id"], row["batch_id"]),
            f"{day}: confirmed {row['request_id']} has no matching message ({message})",
        )
    # 3. The run log, the ledger and the messages agree batch by batch.
    per_batch = Counter(r["batch_id"] for r in confirmed)
    carried = Counter(by_message[r["message_id"]].batch_id for r in confirmed)
    for run in runs:
        batch = run["batch_id"]
        n = run["requests_published"]
        expect(
            n == per_batch.get(batch, 0) == carried.get(batch, 0) if batch else n == 0,
            f"{day}: run {run} published {n}; the ledger confirms {per_batch.get(batch, 0)},"
            f" {carried.get(batch, 0)} messages carry the batch",
        )
    logged = {run["batch_id"] for run in runs if run["batch_id"]}
    expect(set(per_batch) <= logged, f"{day}: confirmed batches {set(per_batch) - logged}"
           " have no run-log row")  # fmt: skip
    # 4. A prediction key never holds two rows.
    twice = [r for r in predictions if r["n"] > 1]
    expect(not twice, f"{day}: prediction keys written twice: {twice}")


def _exit_code(outcome: str) -> int:
    return {"critical": 3, "waiting": 3, "sla_breach": 4, "publish_failed": 1, "error": 1,
            "in_progress": 5}.get(outcome, 0)  # fmt: skip


def _iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --- schedules -----------------------------------------------------------------------------

#: Step kinds and their weights.
STEPS = {
    "wave": 16, "rewrite": 5, "event": 10, "push": 6, "start": 5, "retry": 5, "status": 3,
    "drain": 10, "lose": 3, "redeliver": 3, "crash": 3, "crash_after_publish": 2,
    "crash_then_push": 2, "age": 14, "concurrent": 4, "force": 1, "wrong_date": 3,
    "withdraw": 2,
}  # fmt: skip
DISPATCHING = ("event", "push", "start", "retry")


@dataclass
class Schedule:
    seed: str
    index: int
    game_date: dt.date
    vars: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"schedule {self.index} (seed {self.seed}) on {self.game_date},"
                 f" dbt vars {self.vars}, {self.settings}:"]  # fmt: skip
        lines += [f"  {n + 1}. {step}" for n, step in enumerate(self.steps)]
        return "\n".join(lines)


class ScheduleFailed(AssertionError):
    pass


def run_schedule(
    harness: Harness,
    seed: str,
    index: int,
    day: Day,
    others: Sequence[Day],
    *,
    max_steps: int = 8,
) -> Schedule:
    """Draw and run one schedule on ``day``; raise ScheduleFailed naming the seed, the
    schedule's steps and the broken invariant."""
    rng = random.Random(f"{seed}/{index}")
    model = harness.model(day)
    repeat = rng.choice((24.0, 24.0, 1.0))
    wait = rng.choice((30.0, 30.0, 10.0))
    schedule = Schedule(seed, index, day.game_date, harness.template.overrides,
                        {"alert_repeat_hours": repeat, "start_wait_minutes": wait})  # fmt: skip
    harness.begin(repeat, wait)
    steps = rng.randint(min(4, max_steps), max_steps)
    kinds = rng.choices(list(STEPS), weights=list(STEPS.values()), k=steps)
    if "wave" not in kinds:
        kinds[rng.randrange(len(kinds))] = "wave"
    try:
        for kind in kinds:
            schedule.steps.append(kind)
            schedule.steps[-1] = _step(harness, model, kind, rng, others)
            harness.check(model)
            harness.figures.kinds[kind] += 1
        finish(harness, model, rng, schedule.steps)
    except Exception as exc:
        detail = exc if isinstance(exc, Violation) else traceback.format_exc(limit=8)
        raise ScheduleFailed(f"{schedule}\n  -> at step {len(schedule.steps)}: {detail}") from exc
    harness.figures.schedules += 1
    harness.figures.steps += len(schedule.steps)
    return schedule


def finish(harness: Harness, model: DayModel, rng: random.Random, steps: list[str]) -> None:
    """The ending of every schedule: past every lease, a retry, the worker, maybe the
    status check; then every ready player must be predicted and nothing left pending."""
    ending = ["end: age past every lease", "end: retry", "end: drain"]
    ending += ["end: status"] if rng.random() < 0.25 else []
    for kind in ending:
        steps.append(kind)
        if kind.endswith("lease"):
            harness.age(model, max(harness.rules.lease, harness.rules.claim_lease) + 60)
        elif kind.endswith("retry"):
            harness.call(model, "retry", via=rng.choice(("lib", "serve")))
        elif kind.endswith("drain"):
            harness.drain(model)
        else:
            harness.call(model, "status")
        harness.check(model)
    t = model.now()
    ready = {p for p in model.day.expected if model.ready.get(p)}
    expect(ready <= model.predicted, f"ready players never predicted: {ready - model.predicted}")
    expect(not model.pending(t), f"still pending at the end: {model.pending(t)}")
    harness.check_marts(model)


def _plan(rng: random.Random, model: DayModel) -> dict[str, str]:
    """Sometimes, publishes fail: all of them, some, or with the acknowledgement lost."""
    if rng.random() > 0.15:
        return {}
    players = model.day.expected
    how = rng.choice(("all", "some", "lost"))
    if how == "all":
        return dict.fromkeys(players, "fail")
    chosen = rng.sample(players, rng.randint(1, len(players)))
    return dict.fromkeys(chosen, "fail" if how == "some" else "lost")


def _step(
    harness: Harness, model: DayModel, kind: str, rng: random.Random, others: Sequence[Day]
) -> str:
    """Run one step; what it did, for the schedule's record."""
    day = model.day
    if kind == "wave":
        waiting = [p for p in day.players if not model.ready.get(p)]
        chosen = rng.sample(waiting, rng.randint(1, len(waiting))) if waiting else []
        harness.write_phase4(model, chosen, ready=True)
        return f"Phase 4 wave: {len(chosen)} players production ready"
    if kind == "rewrite":
        written = sorted(model.ready)
        chosen = rng.sample(written, rng.randint(1, len(written))) if written else []
        ready = rng.random() < 0.4
        harness.write_phase4(model, chosen, ready=ready)
        return f"Phase 4 rewrite: {len(chosen)} rows, production ready {ready}"
    if kind in DISPATCHING:
        plan = _plan(rng, model)
        pager = rng.random() < 0.1
        failures = f", publish plan {sorted(Counter(plan.values()).items())}" if plan else ""
        failures += ", pager down" if pager else ""
        if kind == "event":
            times = rng.choice((1, 1, 1, 2))
            outcomes = harness.call(model, "trigger", plan=plan, redeliveries=times,
                                    pager_down=pager)  # fmt: skip
            return f"completion event x{times}{failures}: {outcomes}"
        if kind == "push":
            times = rng.choice((1, 1, 2, 3))
            outcomes = harness.call(model, "trigger", via="serve", plan=plan,
                                    redeliveries=times, pager_down=pager)  # fmt: skip
            return f"push to serve /trigger x{times}{failures}: {outcomes}"
        via = rng.choice(("lib", "serve"))
        if kind == "start":
            ago = rng.choice((None, 0.0, 10.0, 29.0, 30.0, 45.0))
            outcomes = harness.call(model, "start", via=via, plan=plan,
                                    scheduled_minutes_ago=ago, pager_down=pager)  # fmt: skip
            return f"Scheduler start via {via}, scheduled {ago} min ago{failures}: {outcomes}"
        outcomes = harness.call(model, "retry", via=via, plan=plan, pager_down=pager)
        return f"Scheduler retry via {via}{failures}: {outcomes}"
    if kind == "status":
        via = rng.choice(("lib", "serve"))
        return f"Scheduler status via {via}: {harness.call(model, 'status', via=via)}"
    if kind == "force":
        return f"start --force: {harness.call(model, 'start', force=True)}"
    if kind == "drain":
        return f"worker drains: {harness.drain(model)} requests"
    if kind == "lose":
        return f"worker died after taking {harness.lose(model, rng)}"
    if kind == "redeliver":
        return f"requests delivered again: {harness.redeliver(model, rng)}"
    if kind == "crash":
        return f"dispatcher killed after its claim of {harness.crash(model, after_publish=False)}"
    if kind == "crash_after_publish":
        claimed = harness.crash(model, after_publish=True)
        return f"dispatcher killed after publishing, before confirming {claimed}"
    if kind == "withdraw":
        done = sorted(model.predicted)
        chosen = rng.sample(done, rng.randint(1, len(done))) if done else []
        system = rng.choice((None, *required_systems()))
        harness.withdraw(model, chosen, system)
        return f"Phase 5 withdrew the predictions of {chosen} ({system or 'every system'})"
    if kind == "crash_then_push":
        # The fault of the claim lease: killed after its claim, the push redelivered at
        # once (in progress: 503), then again once the claim lease is over.
        claimed = harness.crash(model, after_publish=False)
        first = harness.call(model, "trigger", via="serve")
        harness.age(model, harness.rules.claim_lease)
        second = harness.call(model, "trigger", via="serve")
        return (
            f"dispatcher killed after its claim of {claimed}; push {first}; claim lease"
            f" over; push again {second}"
        )
    if kind == "age":
        minutes = DAY_AGE if rng.random() < 0.05 else rng.choice(harness.ages)
        harness.age(model, minutes * 60)
        return f"{minutes} minutes pass"
    if kind == "concurrent":
        n = rng.choice((2, 2, 3))
        calls = [
            (rng.choice(("trigger", "trigger", "retry", "start")), rng.choice(("lib", "serve")),
             rng.choice((None, 0.0, 45.0)))
            for _ in range(n)
        ]  # fmt: skip
        return f"concurrent {calls}: {harness.concurrent(model, calls)}"
    if kind == "wrong_date":
        target = rng.choice(list(others) + list(harness.template.specials))
        other = harness.model(target)
        via = rng.choice(("lib", "serve"))
        outcomes = harness.call(other, "trigger", via=via)
        harness.check(other)
        return f"completion event for {target.game_date} ({target.kind}) via {via}: {outcomes}"
    raise AssertionError(kind)


# --- a part: a template, copies of it, schedules one after another --------------------------


@dataclass(frozen=True)
class Part:
    """A share of the schedules, run in one process on its own template."""

    seed: str
    first: int
    count: int
    overrides: dict[str, Any]
    workdir: str
    per_copy: int = 100
    #: Run only these indices' copy blocks up to them (a replay).
    only: int | None = None


@dataclass
class PartResult:
    figures: Figures
    build_seconds: float
    seconds: float
    failures: list[str]


def run_part(part: Part) -> PartResult:
    """Build the part's template and run its schedules; a failure stops the copy it
    happened on (its state is then unknown) and the next copy goes on."""
    import sys

    from dispatcher.logs import LogConfig, configure

    workdir = Path(part.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # Thousands of runs: their errors (the failures the schedules cause) go to a file.
    configure(LogConfig(format="json", quiet=True))
    sys.stderr = (workdir / "errors.log").open("a", encoding="utf-8")
    template = build_template(workdir / "template", part.count, part.overrides)
    started = time.perf_counter()
    figures, failures = Figures(), []
    for block_start in range(0, part.count, part.per_copy):
        block = range(block_start, min(block_start + part.per_copy, part.count))
        if part.only is not None and (part.only - part.first) not in block:
            continue
        harness = Harness(template, workdir / f"copy-{block_start}")
        try:
            for local in block:
                if part.only is not None and local > part.only - part.first:
                    break
                others = template.days[block_start:local]
                try:
                    run_schedule(harness, part.seed, part.first + local, template.days[local],
                                 others)  # fmt: skip
                except ScheduleFailed as exc:
                    failures.append(str(exc))
                    break
        finally:
            harness.close()
            figures.add(harness.figures)
            shutil.rmtree(workdir / f"copy-{block_start}", ignore_errors=True)
    return PartResult(figures, template.build_seconds, time.perf_counter() - started, failures)


def split(count: int, parts: int) -> Iterator[tuple[int, int]]:
    """(first index, count) of each part."""
    base, extra = divmod(count, parts)
    first = 0
    for n in range(parts):
        size = base + (1 if n < extra else 0)
        yield first, size
        first += size


def figures_of(results: Sequence[PartResult]) -> Figures:
    total = Figures()
    for result in results:
        total.add(result.figures)
    return total
