"""Alerts: rules raise them, the alert log deduplicates them, channels deliver them.

Every alert is written to the JSON log (stderr) and to nba_orchestration.alert_log,
one row per channel with status sent, suppressed (same dedup key inside the window)
or failed. A failing channel never fails the dispatch.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

ALERT_LOG = "nba_orchestration.alert_log"
#: The same rule and level for the same date is sent once per window.
DEDUP_WINDOW = dt.timedelta(hours=6)


@dataclass(frozen=True)
class Alert:
    game_date: dt.date
    rule: str
    level: str  # info | warning | critical
    message: str

    @property
    def dedup_key(self) -> str:
        return f"{self.game_date.isoformat()}/{self.rule}/{self.level}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "game_date": self.game_date.isoformat()}


#: A channel delivers one alert or raises.
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
                "dedup_key": alert.dedup_key,
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
                "dedup_key": alert.dedup_key, "channel": name, "status": status,
                "created_at": now,
            })  # fmt: skip
    for row in rows:
        columns = ", ".join(row)
        values = ", ".join(f"@{key}" for key in row)
        warehouse.execute(f"insert into {ALERT_LOG} ({columns}) values ({values})", row)
    return rows
