"""The Slack channel: one incoming-webhook POST per alert, a text fallback and Block Kit.

The webhook URL is the secret (whoever has it can post): it never appears in an error,
a log line or a repr. slack_sdk's own exceptions and logging may quote it, so its
logging is silenced and its errors are re-raised as a ChannelError of our words.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import urllib.error
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .channels import ChannelError, TransientError, figures, scrub, with_retries

if TYPE_CHECKING:
    from . import Alert

#: Handed to slack_sdk: it logs the URL when debugging and errors when a request fails.
_SDK_LOG = logging.Logger("alerts.slack.sdk", level=logging.CRITICAL + 1)
_SDK_LOG.disabled = True


def _mrkdwn(text: str) -> str:
    """Slack's three control characters, escaped as its mrkdwn wants them."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(alert: Alert) -> dict[str, Any]:
    """The webhook body: ``text`` (notifications, clients without blocks) and ``blocks``."""
    text = f"{alert.heading}\n{alert.message}"
    if alert.next_command:
        text += f"\nNext: `{alert.next_command}`"
    fields = [
        ("Game date", alert.game_date.isoformat()), ("Rule", alert.rule),
        ("Level", alert.level), ("Kind", alert.kind), *figures(alert),
    ]  # fmt: skip
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": alert.heading[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(alert.message)[:3000]}},
        {
            "type": "section",
            "fields": [  # Slack takes at most ten fields
                {"type": "mrkdwn", "text": f"*{label}*\n{_mrkdwn(value)}"[:2000]}
                for label, value in fields[:10]
            ],
        },
    ]
    if alert.next_command:
        blocks.append({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"Next: `{_mrkdwn(alert.next_command)}`"}],
        })  # fmt: skip
    return {"text": _mrkdwn(text), "blocks": blocks}


class SlackChannel:
    """Posts each alert to a Slack incoming webhook.

    Time is bounded: at most ``attempts`` POSTs, each waiting at most ``timeout``
    seconds to connect and for each read, with pauses of ``backoff``, doubled each time,
    in between; with the defaults (3 attempts, 5 s, 0.5 s) about 3 x 5 + 0.5 + 1 = 16.5
    seconds in all, a Retry-After of a 429 honoured up to twice the pause. Retried: a
    connection refused or reset, a timeout, 429 and 5xx. Any other answer but 200 is a
    failure at once (Slack's 400 invalid_payload, 403, 404 no_service, 410 ...).
    """

    def __init__(
        self, webhook_url: str, *, timeout: float = 5.0, attempts: int = 3,
        backoff: float = 0.5,
    ) -> None:  # fmt: skip
        self._url = webhook_url
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff

    def __repr__(self) -> str:
        return f"SlackChannel(webhook={urlsplit(self._url).hostname or '?'}/***)"

    def __call__(self, alert: Alert) -> None:
        message = slack_message(alert)
        with_retries(
            "slack", lambda: self._post(message), attempts=self.attempts, backoff=self.backoff
        )

    def _secrets(self) -> tuple[str, ...]:
        return (self._url, urlsplit(self._url).path)

    def _post(self, message: dict[str, Any]) -> None:
        from slack_sdk.webhook import WebhookClient

        client = WebhookClient(
            self._url,
            timeout=self.timeout,  # type: ignore[arg-type]  # urlopen takes a float
            logger=_SDK_LOG,
            retry_handlers=[],  # retries are ours (with_retries), bounded
        )
        try:
            response = client.send(text=message["text"], blocks=message["blocks"])
        except TimeoutError:
            raise TransientError(f"no answer within {self.timeout:g} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise ChannelError("slack: the server's TLS certificate is not trusted") from None
            raise TransientError(self._network_reason(exc.reason)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError(self._network_reason(exc)) from None
        except Exception as exc:  # slack_sdk's own (an invalid URL ...): never its text
            raise ChannelError(f"slack: the webhook call failed ({type(exc).__name__})") from None
        status = response.status_code
        if status == 200:
            return
        # Scrubbed before it is cut: a cut through the URL would leave part of it unmatched.
        body = scrub(str(response.body or ""), self._secrets())[:80]
        reason = f"HTTP {status}" + (f" {body}" if body else "")
        if status == 429 or status >= 500:
            raise TransientError(reason, _retry_after(response.headers))
        raise ChannelError(f"slack: {reason} (not retried)")

    def _network_reason(self, error: object) -> str:
        if isinstance(error, TimeoutError):
            return f"no answer within {self.timeout:g} s"
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, OSError) and error.strerror:
            return scrub(f"{type(error).__name__}: {error.strerror}", self._secrets())
        return type(error).__name__ if isinstance(error, BaseException) else "network error"


def _retry_after(headers: Any) -> float | None:
    try:
        value = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
