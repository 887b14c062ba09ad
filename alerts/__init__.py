"""Alerts that reach people once, and only once.

The rules are decided in SQL (fct_alert_conditions; alerts.rules words them and says
which command asks for which rule). deliver() sends each observation on every route
that takes its level, per the dedup state kept in nba_orchestration.alert_log (one row
per alert and channel: sent, suppressed or failed):

- a breach is sent when it starts (kind ``new``), again when it worsens (warning ->
  critical, ``worsened``), and while it persists at most every repeat interval
  (DISPATCHER_ALERT_REPEAT_HOURS, 24; ``repeat``); everything else is ``suppressed``;
- once it clears, one ``resolved`` alert goes to the channels that were told of it;
- a channel that fails is recorded ``failed`` and, not having sent, tries again at
  the next run. A failing channel never fails the dispatch.

The state is per (game date, rule, channel), so it holds across processes, commands
and days. In one process deliveries are serialised, so two threads of `serve` cannot
both send the same breach.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .channels import Route
    from .rules import Observation

ALERT_LOG = "nba_orchestration.alert_log"
DEFAULT_REPEAT = dt.timedelta(hours=24)
_RANK = {"ok": 0, "warning": 1, "critical": 2}
_DELIVERING = threading.Lock()


@dataclass(frozen=True)
class Alert:
    """One message to people: a rule's level on a game date, as the marts decide it."""

    game_date: dt.date
    #: phase4_critical | partial_dispatch | publish_failed | coverage | latency | sla_missed
    rule: str
    #: warning | critical; a `resolved` alert carries the level it clears.
    level: str
    #: The message itself: one or two sentences with the date and the numbers.
    message: str
    #: new | worsened | repeat | resolved
    kind: str = "new"
    #: One line for a subject or a heading ("Partial dispatch for 2026-11-28").
    title: str = ""
    #: The command the on-call engineer runs next ("dispatcher plan --game-date ...").
    next_command: str | None = None
    #: The figures behind the message (players_expected, players_missing, ...).
    numbers: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def dedup_key(self) -> str:
        return f"{self.game_date.isoformat()}/{self.rule}"

    @property
    def heading(self) -> str:
        """`[critical] Phase 4 insufficient for 2026-11-28`, `[resolved] ...`."""
        tag = "resolved" if self.kind == "resolved" else self.level
        return f"[{tag}] {self.title or self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "game_date": self.game_date.isoformat(), "rule": self.rule, "level": self.level,
            "kind": self.kind, "message": self.message, "next_command": self.next_command,
        }  # fmt: skip


#: A channel delivers one alert or raises (it bounds its own time and retries).
Channel = Callable[[Alert], None]


@dataclass(frozen=True)
class Delivery:
    """What deliver() did with one observation that had something to say: the alert
    and its status on each channel it was routed to."""

    alert: Alert
    statuses: Mapping[str, str]

    @property
    def status(self) -> str:
        """One word for the run's JSON: failed if a channel failed, else sent if one
        sent, else suppressed."""
        for status in ("failed", "sent", "suppressed"):
            if status in self.statuses.values():
                return status
        return "suppressed"

    def as_dict(self) -> dict[str, Any]:
        return {**self.alert.as_dict(), "status": self.status, "channels": dict(self.statuses)}


@dataclass(frozen=True)
class _Sent:
    level: str
    kind: str
    at: dt.datetime


def decide(
    level: str, last: _Sent | None, now: dt.datetime, repeat: dt.timedelta
) -> tuple[str, str] | None:
    """(kind, status) for a rule observed at ``level`` on a channel whose latest sent
    alert is ``last``; None: nothing to record (no breach, none to resolve)."""
    if level == "ok":
        if last is not None and last.kind != "resolved":
            return "resolved", "send"
        return None
    if last is None or last.kind == "resolved":
        return "new", "send"
    if _RANK[level] > _RANK[last.level]:
        return "worsened", "send"
    if now - last.at >= repeat:
        return "repeat", "send"
    return "repeat", "suppressed"


def deliver(
    warehouse,
    observations: Sequence[Observation],
    *,
    run_id: str,
    routes: Sequence[Route] | None = None,
    now: dt.datetime | None = None,
    repeat: dt.timedelta = DEFAULT_REPEAT,
) -> list[Delivery]:
    """Send what the dedup state calls for, record every decision in alert_log, and
    return one Delivery per observation that had something to say.

    A channel that failed is not called again in the same call: its later alerts are
    recorded failed at once (the next run sends them), so a channel that is down costs a
    run one alert's timeouts and retries, not one per rule."""
    if not observations:
        return []
    if routes is None:
        from .channels import configured_routes

        routes = configured_routes()
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with _DELIVERING:
        state = _sent_state(warehouse, {o.game_date for o in observations})
        deliveries: list[Delivery] = []
        rows: list[dict[str, Any]] = []
        down: dict[str, str] = {}  # channel -> why, once it failed in this call
        for observation in observations:
            delivery = _deliver_one(observation, routes, state, now, repeat, run_id, rows, down)
            if delivery is not None:
                deliveries.append(delivery)
        _record(warehouse, rows)
    return deliveries


def _deliver_one(
    observation: Observation,
    routes: Sequence[Route],
    state: Mapping[tuple[dt.date, str, str], _Sent],
    now: dt.datetime,
    repeat: dt.timedelta,
    run_id: str,
    rows: list[dict[str, Any]],
    down: dict[str, str],
) -> Delivery | None:
    from dispatcher.logs import log

    alert, statuses = None, {}
    for route in routes:
        last = state.get((observation.game_date, observation.rule, route.name))
        if observation.level != "ok" and observation.level not in route.levels:
            continue
        decision = decide(observation.level, last, now, repeat)
        if decision is None:
            continue
        kind, action = decision
        alert = _alert(observation, kind, last)
        status, error = "suppressed", None
        if action == "send" and route.name in down:
            status, error = "failed", f"not tried: failed earlier in this run ({down[route.name]})"
        elif action == "send":
            try:
                route.channel(alert)
                status = "sent"
            except Exception as exc:  # a channel failure never fails the dispatch
                status, error = "failed", _reason(exc)
                down[route.name] = error
                log("ERROR", f"alert channel {route.name} failed: {error}",
                    game_date=observation.game_date.isoformat(), alert_rule=observation.rule,
                    run_id=run_id)  # fmt: skip
        else:
            log("INFO", f"alert suppressed on {route.name}: {alert.title}"
                f" (sent {last.at:%Y-%m-%d %H:%M} UTC)" if last else alert.title,
                game_date=observation.game_date.isoformat(), alert_rule=observation.rule,
                run_id=run_id)  # fmt: skip
        statuses[route.name] = status
        rows.append({
            "alert_id": uuid.uuid4().hex, "game_date": alert.game_date, "run_id": run_id,
            "rule": alert.rule, "level": alert.level, "kind": alert.kind,
            "message": alert.message, "dedup_key": alert.dedup_key, "channel": route.name,
            "status": status, "error_message": error, "created_at": now,
        })  # fmt: skip
    if alert is None:
        return None
    return Delivery(alert, statuses)


def _alert(observation: Observation, kind: str, last: _Sent | None) -> Alert:
    resolved = kind == "resolved"
    return Alert(
        game_date=observation.game_date,
        rule=observation.rule,
        level=last.level if resolved and last else observation.level,
        message=observation.resolved_message if resolved else observation.message,
        kind=kind,
        title=observation.title,
        next_command=None if resolved else observation.next_command,
        numbers=observation.numbers,
    )


def _reason(exc: BaseException) -> str:
    """A failure in one line. Channels raise ChannelError with a reason free of secrets;
    any other exception is named by its type only, since its text may quote a URL or a
    server's answer."""
    from .channels import ChannelError

    if isinstance(exc, ChannelError):
        return str(exc).splitlines()[0][:300] if str(exc) else "ChannelError"
    return type(exc).__name__


def _sent_state(warehouse, game_dates: Iterable[dt.date]) -> dict[tuple[dt.date, str, str], _Sent]:
    """The latest sent alert per (game date, rule, channel)."""
    state: dict[tuple[dt.date, str, str], _Sent] = {}
    for game_date in sorted(game_dates):
        rows = warehouse.query(
            f"select rule, channel, level, kind, created_at from {ALERT_LOG}"
            " where game_date = @game_date and status = 'sent'"
            " order by created_at, alert_id",
            {"game_date": game_date},
        )
        for row in rows:
            state[(game_date, row["rule"], row["channel"])] = _Sent(
                row["level"], row["kind"] or "new", row["created_at"]
            )
    return state


def _record(warehouse, rows: list[dict[str, Any]]) -> None:
    """Every decision in one statement."""
    if not rows:
        return
    columns = list(rows[0])
    values, params = [], {}
    for n, row in enumerate(rows):
        values.append("(" + ", ".join(f"@{column}_{n}" for column in columns) + ")")
        params.update({f"{column}_{n}": row[column] for column in columns})
    warehouse.execute(
        f"insert into {ALERT_LOG} ({', '.join(columns)}) values {', '.join(values)}", params
    )
