"""Validation of what wakes the dispatcher: the Phase 4 completion event and game dates."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

#: A game date further ahead than this is a mistake, not a schedule.
MAX_DAYS_AHEAD = 14
EARLIEST_GAME_DATE = dt.date(2000, 1, 1)
#: Events are small; anything bigger is refused before parsing.
MAX_EVENT_BYTES = 64 * 1024
#: An event with unknown keys is refused; the message names at most this many.
MAX_UNKNOWN_SHOWN = 3

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EVENT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "event_type": str,
    "processor": str,
    "game_date": str,
    "players_processed": int,
    "players_ready": int,
    "players_failed": int,
    "timestamp": str,
    "run_id": str,
}


class InvalidInput(ValueError):
    """Input the dispatcher refuses; the message is one line for people."""


@dataclass(frozen=True)
class Phase4Event:
    game_date: dt.date
    players_processed: int | None = None
    players_ready: int | None = None
    players_failed: int | None = None
    run_id: str | None = None
    timestamp: dt.datetime | None = None


def parse_game_date(value: Any, *, today: dt.date, field: str = "game_date") -> dt.date:
    """A real calendar date YYYY-MM-DD, not before 2000 nor over two weeks ahead.

    The one home of the rule: the event's game_date and every date option of the CLI
    go through here. `field` names the value in the messages."""
    if isinstance(value, dt.datetime) or not isinstance(value, str | dt.date):
        raise InvalidInput(f"{field} must be a YYYY-MM-DD string, got {type(value).__name__}")
    if isinstance(value, str):
        text = value.strip()
        # fromisoformat alone would take 20261129 and 2026-W48-1 (Python 3.11).
        if not _DATE.fullmatch(text):
            raise InvalidInput(f"{field} must be YYYY-MM-DD, got {_short(value)}")
        try:
            value = dt.date.fromisoformat(text)
        except ValueError:
            raise InvalidInput(f"{field} {_short(text)} is not a calendar date") from None
    if value < EARLIEST_GAME_DATE:
        raise InvalidInput(f"{field} {value} is before {EARLIEST_GAME_DATE}")
    if value > today + dt.timedelta(days=MAX_DAYS_AHEAD):
        raise InvalidInput(
            f"{field} {value} is more than {MAX_DAYS_AHEAD} days after today ({today})"
        )
    return value


def parse_phase4_event(raw: str | bytes | dict, *, today: dt.date) -> Phase4Event:
    """The Phase 4 completion event (docs/CONTRACT.md): only game_date is required; the
    rest is type-checked, and a key outside the contract is refused."""
    if isinstance(raw, str | bytes):
        if len(raw) > MAX_EVENT_BYTES:
            raise InvalidInput(f"event is larger than {MAX_EVENT_BYTES} bytes")
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # too deep
            raise InvalidInput(f"event is not valid JSON: {exc}") from None
    else:
        payload = raw
    if not isinstance(payload, dict):
        raise InvalidInput("event must be a JSON object")
    if "game_date" not in payload:
        raise InvalidInput("event has no game_date")
    unknown = sorted((key for key in payload if key not in _EVENT_FIELDS), key=str)
    if unknown:
        shown = ", ".join(_short(key, 24) for key in unknown[:MAX_UNKNOWN_SHOWN])
        more = len(unknown) - MAX_UNKNOWN_SHOWN
        raise InvalidInput(
            f"event has unknown field{'s' if len(unknown) > 1 else ''} {shown}"
            + (f" and {more} more" if more > 0 else "")
        )
    for name, kind in _EVENT_FIELDS.items():
        value = payload.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            raise InvalidInput(f"event field {name} must be {_kind(kind)}, got {_short(value)}")
        if isinstance(value, int) and value < 0:
            raise InvalidInput(f"event field {name} must not be negative")
    event_type = payload.get("event_type")
    if event_type is not None and event_type != "phase4_complete":
        raise InvalidInput(f"event_type must be phase4_complete, got {_short(event_type)}")
    timestamp = None
    if payload.get("timestamp") is not None:
        try:
            timestamp = dt.datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"event timestamp is not ISO-8601: {_short(payload['timestamp'])}"
            ) from None
    return Phase4Event(
        game_date=parse_game_date(payload["game_date"], today=today),
        players_processed=payload.get("players_processed"),
        players_ready=payload.get("players_ready"),
        players_failed=payload.get("players_failed"),
        run_id=payload.get("run_id"),
        timestamp=timestamp,
    )


def _kind(kind) -> str:
    return {str: "a string", int: "an integer"}.get(kind, str(kind))


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: What woke a run, recorded on every run: the Phase 4 completion event, a Cloud
#: Scheduler job, a person at the CLI (the default), a backfill.
TRIGGER_SOURCES = ("pubsub", "scheduler", "manual", "backfill")
