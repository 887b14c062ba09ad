"""The far ends of the alert channels, as real servers on 127.0.0.1, one per test.

- SlackStandIn: an HTTP server taking incoming-webhook POSTs, recording each (path,
  headers, JSON body) and answering as its ``mode`` says: ok (200 "ok"), error (its
  ``status``, 500 by default), flaky (``status`` ``failures`` times, then 200), hang
  (reads the request and never answers until stopped).
- SmtpStandIn: aiosmtpd's server, recording each message as parsed, with AUTH (LOGIN,
  PLAIN) for one user and STARTTLS with a certificate made here (TlsFiles),
  ``failures`` transient replies to DATA before it accepts, and recipients it refuses.
- refused_port(), black_hole(): a port nothing listens on, and one that takes the TCP
  connection and never says a word (no SMTP greeting, no HTTP answer).

The fixtures at the end are imported by conftest.py, so every test file can ask for
them: slack_server, refused_port, smtp_server, smtp_auth_server, smtp_tls_server (the
client trusts its certificate through SSL_CERT_FILE), smtp_black_hole, tls_files.
"""

from __future__ import annotations

import datetime as dt
import email
import email.message
import email.policy
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
#: The longest a hanging answer is held: past any client timeout the tests use.
HANG_SECONDS = 30.0
SMTP_USER = "dispatcher"
#: A sentinel: the tests look for it in every error and log line the channels write.
SMTP_PASSWORD = "sentinel-smtp-password-4e1b"


# -- Slack -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlackRequest:
    path: str
    headers: dict[str, str]
    #: The JSON body as parsed (None: not JSON).
    body: Any


class SlackStandIn:
    """A Slack incoming webhook: POST JSON to any path under ``url``."""

    def __init__(self) -> None:
        self.mode = "ok"
        #: What error and flaky answer with.
        self.status = 500
        #: flaky: how many failures before 200.
        self.failures = 0
        #: Sent with each failure when set (429's Retry-After).
        self.retry_after: str | None = None
        self.requests: list[SlackRequest] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer((HOST, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def webhook_url(self, secret: str = "T0000/B0000/sentinel-webhook-secret-8d2c") -> str:
        """A webhook URL on this server; the path is the part Slack keeps secret."""
        return f"{self.url}/services/{secret}"

    def start(self) -> SlackStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _answer(self) -> tuple[int, str] | None:
        """What the next request gets: (status, body), or None: no answer at all."""
        with self._lock:
            if self.mode == "hang":
                return None
            if self.mode == "error":
                return self.status, "internal_error" if self.status >= 500 else "no_service"
            if self.mode == "flaky" and self.failures > 0:
                self.failures -= 1
                return self.status, "internal_error"
            return 200, "ok"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with stand_in._lock:
                    stand_in.requests.append(SlackRequest(self.path, dict(self.headers), body))
                answer = stand_in._answer()
                if answer is None:
                    stand_in._release.wait(HANG_SECONDS)
                    self.close_connection = True
                    return
                status, text = answer
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                if status != 200 and stand_in.retry_after is not None:
                    self.send_header("Retry-After", stand_in.retry_after)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the default writes the path (the secret) to stderr

        return Handler


def refused_port() -> int:
    """A port on 127.0.0.1 that was just bound and closed: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def black_hole() -> socket.socket:
    """A listening socket that never accepts: the kernel completes the TCP handshake,
    then nothing is ever said. Close it to stop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    sock.listen(16)
    return sock


# -- TLS ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A certificate authority of our own and a server certificate it signed, for
    127.0.0.1 and localhost (PEM files)."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA and a server certificate signed by it (both EC P-256, valid for a day)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alert tests CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST)),
        ]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    return files


# -- SMTP --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    #: Whether the session had switched to TLS (STARTTLS) when the message came.
    tls: bool
    #: The user the session logged in as (None: no AUTH).
    login: str | None

    @property
    def body(self) -> str:
        """The plain-text body, with the wire's CRLF line ends made "\\n"."""
        part = self.message.get_body(("plain",))
        assert part is not None
        return part.get_content().replace("\r\n", "\n")


@dataclass
class SmtpStandIn:
    """aiosmtpd on 127.0.0.1: records messages; ``users`` turns AUTH on (LOGIN and PLAIN;
    over plain text only when there is no TLS); ``tls`` turns STARTTLS on and requires it."""

    users: dict[str, str] = field(default_factory=dict)
    tls: TlsFiles | None = None
    #: Replies to DATA that come before the message is taken (a greylisting server).
    failures: int = 0
    failure_reply: str = "451 4.3.0 Try again later"
    #: Recipients refused at RCPT TO, with the reply each gets ("550 5.1.1 No such user").
    refused_recipients: dict[str, str] = field(default_factory=dict)
    messages: list[ReceivedMail] = field(default_factory=list)
    #: Every session (its first EHLO), DATA command and AUTH attempt seen, accepted or not
    #: (smtplib tries each mechanism the server offers before it gives up).
    sessions: int = 0
    data_calls: int = 0
    auth_attempts: int = 0

    def __post_init__(self) -> None:
        self._controller: Any = None
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self._controller.port

    def start(self) -> SmtpStandIn:
        from aiosmtpd.controller import Controller

        class _AnyPort(Controller):
            """Bound to port 0; the port the OS gave is read back before the first call."""

            def _trigger_server(self) -> None:
                self.port = self.server.sockets[0].getsockname()[1]
                super()._trigger_server()

        options: dict[str, Any] = {}
        if self.users:
            options.update(authenticator=self._authenticate,
                           auth_require_tls=self.tls is not None)  # fmt: skip
        if self.tls is not None:
            options.update(tls_context=self.tls.server_context(), require_starttls=True)
        self._controller = _AnyPort(
            _Handler(self), hostname=HOST, port=0, server_hostname="localhost",
            ready_timeout=10, **options,
        )  # fmt: skip
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        with self._lock:
            self.auth_attempts += 1
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode()
            if self.users.get(login) == auth_data.password.decode():
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)


class _Handler:
    def __init__(self, stand_in: SmtpStandIn) -> None:
        self.stand_in = stand_in

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        if session.ssl is None and not session.host_name:  # not the EHLO after STARTTLS
            with self.stand_in._lock:
                self.stand_in.sessions += 1
        session.host_name = hostname  # what aiosmtpd does itself without this hook
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:  # noqa: N802
        reply = self.stand_in.refused_recipients.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd)
        stand_in = self.stand_in
        with stand_in._lock:
            stand_in.data_calls += 1
            if stand_in.failures > 0:
                stand_in.failures -= 1
                return stand_in.failure_reply
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        with stand_in._lock:
            stand_in.messages.append(ReceivedMail(
                envelope.mail_from, list(envelope.rcpt_tos), message,
                tls=session.ssl is not None,
                login=session.auth_data if isinstance(session.auth_data, str) else None,
            ))  # fmt: skip
        return "250 OK"


# -- fixtures (imported by conftest.py) --------------------------------------------------


@pytest.fixture
def slack_server() -> Iterator[SlackStandIn]:
    """A Slack webhook stand-in answering 200 "ok"; set ``mode`` for the others."""
    server = SlackStandIn().start()
    yield server
    server.stop()


@pytest.fixture(name="refused_port")
def refused_port_fixture() -> int:
    """A port on 127.0.0.1 where connecting is refused."""
    return refused_port()


@pytest.fixture
def smtp_server() -> Iterator[SmtpStandIn]:
    """An SMTP server without AUTH or TLS."""
    server = SmtpStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def smtp_auth_server() -> Iterator[SmtpStandIn]:
    """An SMTP server with AUTH for SMTP_USER / SMTP_PASSWORD, without TLS."""
    server = SmtpStandIn(users={SMTP_USER: SMTP_PASSWORD}).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("alert-tls"))


@pytest.fixture
def smtp_tls_server(tls_files, monkeypatch) -> Iterator[SmtpStandIn]:
    """An SMTP server requiring STARTTLS, with AUTH for SMTP_USER / SMTP_PASSWORD; its
    CA is what ssl.create_default_context() trusts here (SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.ca))
    server = SmtpStandIn(users={SMTP_USER: SMTP_PASSWORD}, tls=tls_files).start()
    yield server
    server.stop()


@pytest.fixture
def smtp_black_hole() -> Iterator[int]:
    """A port that takes the connection and never sends the SMTP greeting."""
    sock = black_hole()
    yield sock.getsockname()[1]
    sock.close()
