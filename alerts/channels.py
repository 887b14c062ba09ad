"""Where alerts go: the JSON log always, Slack and email when their settings are set.

A channel is a callable that delivers one alert or raises ChannelError; it bounds its
own time and retries (with_retries). Its error text is one line and never carries a
secret (the webhook URL, the SMTP password): the dispatcher logs it and writes it to
the alert log. configured_routes() reads the DISPATCHER_* settings once, at start, and
says what is wrong with them as one ConfigError.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dispatcher.config import ConfigError, setting

if TYPE_CHECKING:  # at run time only as annotations: alerts/__init__ may import this module
    from . import Alert, Channel

LEVELS = ("warning", "critical")
#: The figures the channels show first, in this order; any others follow.
MAIN_NUMBERS = (
    "players_expected", "players_missing", "players_requested", "coverage_pct",
    "minutes_to_first_request",
)  # fmt: skip


class ChannelError(RuntimeError):
    """A channel could not deliver an alert: one line saying why, never a secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(" ".join(reason.split()))


class TransientError(Exception):
    """One attempt failed in a way another attempt may not (timeout, refused, 429, 5xx,
    4xx SMTP replies). ``retry_after``: seconds the server asked for, if it did."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def with_retries(name: str, attempt: Callable[[], None], *, attempts: int, backoff: float) -> None:
    """Call ``attempt`` until it returns, at most ``attempts`` times: a TransientError
    is tried again after ``backoff`` seconds, doubled each time (a server's Retry-After
    is honoured up to twice that pause); a ChannelError is final at once. The pauses add
    up to at most ``2 * backoff * (2**(attempts-1) - 1)`` seconds."""
    last, number = "no attempt made", 0
    for number in range(1, max(attempts, 1) + 1):
        try:
            attempt()
            return
        except TransientError as exc:
            last = exc.reason
            if number >= attempts:
                break
            pause = backoff * 2 ** (number - 1)
            if exc.retry_after is not None:
                pause = min(max(pause, exc.retry_after), 2 * pause)
            time.sleep(pause)
    raise ChannelError(f"{name}: {last} ({number} attempt{'s' if number > 1 else ''})") from None


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` on one line with each secret (longest first) replaced by a mask."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return " ".join(text.split())


# -- what every channel shows ------------------------------------------------------------


def _label(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        value = int(value) if value.is_integer() else round(value, 1)
    return f"{value}%" if key.endswith("_pct") else str(value)


def figures(alert: Alert) -> list[tuple[str, str]]:
    """The alert's numbers as (label, value), the main ones first (MAIN_NUMBERS)."""
    numbers = dict(alert.numbers)
    keys = [k for k in MAIN_NUMBERS if k in numbers] + [k for k in numbers if k not in MAIN_NUMBERS]
    return [(_label(k), _value(k, numbers[k])) for k in keys if numbers[k] is not None]


def log_channel(alert: Alert) -> None:
    """The JSON log on stderr: ERROR for critical, WARNING for warning, INFO once resolved."""
    from dispatcher.logs import log

    if alert.kind == "resolved":
        severity = "INFO"
    else:
        severity = "ERROR" if alert.level == "critical" else "WARNING"
    log(
        severity,
        alert.message,
        game_date=alert.game_date.isoformat(),
        alert_rule=alert.rule,
        alert_level=alert.level,
        alert_kind=alert.kind,
        next_command=alert.next_command,
    )


# -- routes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """A named channel and the alert levels it is sent (a resolved alert goes where the
    level it clears went)."""

    name: str
    channel: Channel
    levels: frozenset[str]


def configured_routes(environ: Mapping[str, str] | None = None) -> list[Route]:
    """The log, plus Slack when DISPATCHER_SLACK_WEBHOOK_URL is set and email when
    DISPATCHER_SMTP_HOST is set; a ConfigError (one line naming the variable, never a
    secret's value) when a setting cannot be used. Nothing is contacted here."""
    env = os.environ if environ is None else environ
    routes = [Route("log", log_channel, frozenset(LEVELS))]
    slack_levels = _levels(env, "DISPATCHER_ALERT_SLACK_LEVELS")
    email_levels = _levels(env, "DISPATCHER_ALERT_EMAIL_LEVELS")
    url = setting("DISPATCHER_SLACK_WEBHOOK_URL", env)
    if url:
        if not url.startswith(("https://", "http://")) or any(c.isspace() for c in url):
            raise ConfigError("DISPATCHER_SLACK_WEBHOOK_URL must be an https:// URL")
        from .slack import SlackChannel

        routes.append(Route("slack", SlackChannel(url), slack_levels))
    host = setting("DISPATCHER_SMTP_HOST", env)
    if host:
        routes.append(Route("email", _email_channel(env, host), email_levels))
    return routes


def _levels(env: Mapping[str, str], name: str) -> frozenset[str]:
    text = setting(name, env) or ""
    levels = {part.strip().lower() for part in text.split(",") if part.strip()}
    if not levels or not levels <= set(LEVELS):
        raise ConfigError(
            f"{name} must list levels from {', '.join(LEVELS)} (comma-separated), got {text[:40]!r}"
        )
    return frozenset(levels)


def _address(name: str, text: str) -> str:
    address = text.strip()
    if "@" not in address or any(c.isspace() or c in "<>,;" for c in address):
        raise ConfigError(f"{name}: {address[:60]!r} is not an email address")
    return address


def _email_channel(env: Mapping[str, str], host: str) -> Channel:
    from .email import EmailChannel

    sender = setting("DISPATCHER_ALERT_EMAIL_FROM", env)
    if not sender:
        raise ConfigError("DISPATCHER_ALERT_EMAIL_FROM is required with DISPATCHER_SMTP_HOST")
    to = setting("DISPATCHER_ALERT_EMAIL_TO", env) or ""
    recipients = [_address("DISPATCHER_ALERT_EMAIL_TO", a) for a in to.split(",") if a.strip()]
    if not recipients:
        raise ConfigError("DISPATCHER_ALERT_EMAIL_TO is required with DISPATCHER_SMTP_HOST")
    port = (setting("DISPATCHER_SMTP_PORT", env) or "").strip()
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(
            f"DISPATCHER_SMTP_PORT must be a port number (1-65535), got {port[:20]!r}"
        )
    starttls = (setting("DISPATCHER_SMTP_STARTTLS", env) or "").strip().lower()
    if starttls not in _BOOLEANS:
        raise ConfigError(f"DISPATCHER_SMTP_STARTTLS must be true or false, got {starttls[:20]!r}")
    username = setting("DISPATCHER_SMTP_USERNAME", env)
    password = setting("DISPATCHER_SMTP_PASSWORD", env)
    if bool(username) != bool(password):
        raise ConfigError(
            "DISPATCHER_SMTP_USERNAME and DISPATCHER_SMTP_PASSWORD are set together or not at all"
        )
    return EmailChannel(
        host.strip(), int(port), sender=_address("DISPATCHER_ALERT_EMAIL_FROM", sender),
        recipients=recipients, username=username, password=password,
        starttls=_BOOLEANS[starttls],
    )  # fmt: skip


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
