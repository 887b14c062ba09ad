"""Alerts: rules raise them, the alert log deduplicates them, channels deliver them.

Every alert is written to the JSON log (stderr) and to nba_orchestration.alert_log,
one row per channel with status sent, suppressed (same dedup key inside the window)
or failed. A failing channel never fails the dispatch.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ALERT_LOG = "nba_orchestration.alert_log"
#: The same rule and level for the same date is sent once per window.
DEDUP_WINDOW = dt.timedelta(hours=6)


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


def log_channel(alert: Alert) -> None:
    from dispatcher.logs import log

    log(
        "ERROR" if alert.level == "critical" else "WARNING",
        alert.message,
        game_date=alert.game_date.isoformat(),
        alert_rule=alert.rule,
        alert_level=alert.level,
    )


def deliver(
    warehouse,
    alerts: Sequence[Alert],
    *,
    run_id: str,
    channels: dict[str, Channel] | None = None,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Send each alert on every channel unless already sent inside the window; log rows."""
    if not alerts:
        return []
    channels = channels or {"log": log_channel}
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows: list[dict[str, Any]] = []
    for alert in alerts:
        recent = warehouse.query(
            f"select channel from {ALERT_LOG} where game_date = @game_date"
            " and dedup_key = @dedup_key and status = 'sent' and created_at >= @since",
            {
                "game_date": alert.game_date,
                "dedup_key": f"{alert.dedup_key}/{alert.level}",
                "since": now - DEDUP_WINDOW,
            },
        )
        already = {row["channel"] for row in recent}
        for name, channel in channels.items():
            status = "suppressed" if name in already else "sent"
            if status == "sent":
                try:
                    channel(alert)
                except Exception as exc:  # a channel failure never fails the dispatch
                    from dispatcher.logs import log

                    log("ERROR", f"alert channel {name} failed: {type(exc).__name__}",
                        game_date=alert.game_date.isoformat())  # fmt: skip
                    status = "failed"
            rows.append({
                "alert_id": uuid.uuid4().hex, "game_date": alert.game_date, "run_id": run_id,
                "rule": alert.rule, "level": alert.level, "message": alert.message,
                "dedup_key": f"{alert.dedup_key}/{alert.level}", "channel": name, "status": status,
                "created_at": now,
            })  # fmt: skip
    for row in rows:
        columns = ", ".join(row)
        values = ", ".join(f"@{key}" for key in row)
        warehouse.execute(f"insert into {ALERT_LOG} ({columns}) values ({values})", row)
    return rows
