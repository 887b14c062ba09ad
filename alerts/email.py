"""The email channel: one plain-text message per alert over SMTP, STARTTLS by default.

The subject is the alert's heading; X-Dispatcher-* headers carry the date, rule, level
and kind for mail filters. The password never appears in an error or a repr: errors
are built from reply codes and our own words, and any server text is scrubbed of it.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING

from .channels import ChannelError, TransientError, figures, scrub, with_retries

if TYPE_CHECKING:
    from . import Alert


def email_message(alert: Alert, *, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """The message as sent: Subject = the heading, a plain-text body, X-Dispatcher-*."""
    msg = EmailMessage()
    msg["Subject"] = alert.heading
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    msg["X-Dispatcher-Game-Date"] = alert.game_date.isoformat()
    msg["X-Dispatcher-Rule"] = alert.rule
    msg["X-Dispatcher-Level"] = alert.level
    msg["X-Dispatcher-Kind"] = alert.kind
    lines = [alert.message, ""]
    rows = [("Game date", alert.game_date.isoformat()), ("Rule", alert.rule),
            ("Level", alert.level), ("Kind", alert.kind), *figures(alert)]  # fmt: skip
    lines += [f"{label}: {value}" for label, value in rows]
    if alert.next_command:
        lines += ["", "Run next:", f"    {alert.next_command}"]
    msg.set_content("\n".join(lines) + "\n")
    return msg


class EmailChannel:
    """Sends each alert by SMTP to ``recipients``.

    Time is bounded: at most ``attempts`` connections, each network wait (connect, the
    greeting, each reply) at most ``timeout`` seconds, with pauses of ``backoff``,
    doubled each time, in between. Retried: a refused or dropped connection, a timeout,
    a 4xx reply (greylisting, 421, 451). Final at once: a 5xx reply, a refused login, a
    server without STARTTLS when it is asked for, a certificate that is not trusted.

    STARTTLS uses ``context`` or ``ssl.create_default_context()`` (the system's CAs, or
    the file SSL_CERT_FILE names) and checks the certificate against ``host``.
    """

    def __init__(
        self, host: str, port: int = 587, *, sender: str, recipients: Sequence[str],
        username: str | None = None, password: str | None = None, starttls: bool = True,
        timeout: float = 10.0, attempts: int = 3, backoff: float = 1.0,
        context: ssl.SSLContext | None = None,
    ) -> None:  # fmt: skip
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = list(recipients)
        self.username = username
        self._password = password
        self.starttls = starttls
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.context = context

    def __repr__(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        return f"EmailChannel({user}{self.host}:{self.port} -> {', '.join(self.recipients)})"

    def __call__(self, alert: Alert) -> None:
        msg = email_message(alert, sender=self.sender, recipients=self.recipients)
        with_retries("email", lambda: self._send(msg), attempts=self.attempts,
                     backoff=self.backoff)  # fmt: skip

    def _send(self, msg: EmailMessage) -> None:
        try:
            self._session(msg)
        except (ChannelError, TransientError):
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            reason = f"every recipient refused ({', '.join(map(str, codes))})"
            if all(400 <= code < 500 for code in codes):
                raise TransientError(reason) from None
            raise ChannelError(f"email: {reason}") from None
        except smtplib.SMTPResponseException as exc:
            reason = f"SMTP {exc.smtp_code} {self._text(exc.smtp_error)}".rstrip()
            if 400 <= exc.smtp_code < 500:
                raise TransientError(reason) from None
            raise ChannelError(f"email: {reason} (not retried)") from None
        except smtplib.SMTPServerDisconnected as exc:
            if "timed out" in str(exc):  # how smtplib says the greeting never came
                raise TransientError(f"no answer within {self.timeout:g} s") from None
            raise TransientError("the server closed the connection") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise ChannelError(f"email: {self._text(str(exc))}") from None
        except smtplib.SMTPException as exc:
            raise ChannelError(f"email: {self._text(str(exc)) or type(exc).__name__}") from None
        except ssl.SSLCertVerificationError:
            raise ChannelError(
                f"email: the TLS certificate of {self.host} is not trusted"
            ) from None
        except ssl.SSLError as exc:
            raise TransientError(f"TLS failed ({type(exc).__name__})") from None
        except TimeoutError:
            raise TransientError(f"no answer within {self.timeout:g} s") from None
        except ConnectionRefusedError:
            raise TransientError("connection refused") from None
        except OSError as exc:
            raise TransientError(
                f"{type(exc).__name__}: {self._text(exc.strerror or '')}".rstrip(": ")
            ) from None

    def _session(self, msg: EmailMessage) -> None:
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if self.starttls:
                if not smtp.has_extn("starttls"):
                    raise ChannelError(
                        f"email: {self.host}:{self.port} does not offer STARTTLS"
                        " (DISPATCHER_SMTP_STARTTLS=false to send without it)"
                    )
                smtp.starttls(context=self.context or ssl.create_default_context())
                smtp.ehlo()
            if self.username and self._password:
                self._login(smtp, self.username, self._password)
            refused = smtp.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)
        except BaseException:
            smtp.close()
            raise
        try:  # sent: a failing goodbye must not send it again
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()
        if refused:  # some took it: sending again would repeat it to them
            raise ChannelError(f"email: sent, but refused for {', '.join(sorted(refused))}")

    def _login(self, smtp: smtplib.SMTP, username: str, password: str) -> None:
        try:
            smtp.login(username, password)
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise TransientError(f"login failed for now (SMTP {exc.smtp_code})") from None
            raise ChannelError(
                f"email: login refused for {username} (SMTP {exc.smtp_code})"
            ) from None

    def _text(self, text: bytes | str) -> str:
        """A server's or the library's words, cut short, never quoting the password."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return scrub(text, [self._password])[:120]
