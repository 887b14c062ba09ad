"""`dispatcher serve`: the HTTP service Pub/Sub push and Cloud Scheduler call.

Flask routes over the same library the CLI uses, under gunicorn (never Flask's
development server). Each route decodes and validates its input, runs one
``Dispatcher`` call and maps the run's outcome to a status code; nothing is held open
for Phase 4: ``POST /start`` checks readiness once (``Dispatcher.start_check``) and
answers 503 while the wait is not over, so the Scheduler job's retries do the waiting.

Routes (every answer is JSON):

- ``POST /trigger``: the Pub/Sub push envelope; its message's data is the Phase 4
  completion event (base64 JSON). trigger_source ``pubsub``.
- ``POST /start``, ``/retry``, ``/status``: Cloud Scheduler HTTP targets; body
  ``{"game_date": "YYYY-MM-DD"}`` (optional, default today in PT), JSON whatever the
  Content-Type. trigger_source ``scheduler``.
- ``GET /health``: version, and whether the warehouse answers a cheap query.

Status codes: 200 done (``no_games``, ``nothing_pending``, ``sla_breach`` included:
the status check's alert went out, a retry would change nothing), 400 malformed, 401
no or invalid token, 403 a valid token of an account not allowed, 413 body too large,
503 Phase 4 insufficient (``critical``), still ``waiting`` or ``in_progress`` (another
dispatch's claims not confirmed yet; both with Retry-After), 500 a real fault
(``error``, ``publish_failed``, an exception).

With ``DISPATCHER_PUSH_AUDIENCE`` set, every route but ``/health`` needs a Google-signed
OIDC ID token (``Authorization: Bearer``) for that audience, from an account listed in
``DISPATCHER_PUSH_SERVICE_ACCOUNTS`` with a verified email. Tokens are never logged nor
echoed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, Response, g, request
from gunicorn.glogging import Logger
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import __version__
from .config import ConfigError, Settings, setting
from .dispatch import Dispatcher, RunResult
from .events import MAX_EVENT_BYTES, InvalidInput, parse_game_date, parse_phase4_event
from .logs import log

PACIFIC = ZoneInfo("America/Los_Angeles")
#: A push envelope carries the event base64-encoded (4/3 of its size) plus its metadata.
MAX_BODY_BYTES = MAX_EVENT_BYTES * 4 // 3 + 16 * 1024
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
#: Seconds a fetch of the token-signing certificates may take.
CERTS_TIMEOUT = 5.0
#: The certificates are cached at most this long (Google's Cache-Control says hours).
CERTS_MAX_AGE = 3600.0
#: Seconds of clock skew a token's iat/exp are allowed.
CLOCK_SKEW = 10
#: Seconds between two /start checks while Phase 4 is not ready (Retry-After).
START_RETRY_SECONDS = 60
SCHEDULE_TIME_HEADER = "X-CloudScheduler-ScheduleTime"

#: Outcome -> status code. Anything else is a fault.
STATUS_CODES = {
    "dispatched": 200, "partial": 200, "nothing_pending": 200, "no_games": 200,
    "ok": 200, "sla_breach": 200,
    "critical": 503, "waiting": 503, "in_progress": 503,
    "publish_failed": 500, "error": 500,
}  # fmt: skip


class BadRequest(Exception):
    """Input refused with 400; ``field`` names what is wrong."""

    def __init__(self, message: str, field: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


class Unauthorized(Exception):
    """A request without a usable token (401) or from an account not allowed (403)."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.status = status


# -- settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeSettings:
    """What `serve` reads beyond the dispatcher's Settings (config.KNOWN_SETTINGS)."""

    #: None: no OIDC check (the emulator, a private network).
    audience: str | None = None
    service_accounts: tuple[str, ...] = ()
    certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    start_wait_minutes: float = 30.0

    def __post_init__(self) -> None:
        if self.audience and not self.service_accounts:
            raise ConfigError(
                "DISPATCHER_PUSH_SERVICE_ACCOUNTS is required with DISPATCHER_PUSH_AUDIENCE:"
                " any Google account can get a token for an audience, so the token's"
                " email must be checked (list the push and Scheduler service accounts)"
            )
        if self.service_accounts and not self.audience:
            raise ConfigError(
                "DISPATCHER_PUSH_SERVICE_ACCOUNTS is set without DISPATCHER_PUSH_AUDIENCE:"
                " set the audience (the service URL) to turn the OIDC check on"
            )
        if not 0 <= self.start_wait_minutes <= 180:
            raise ConfigError("DISPATCHER_START_WAIT_MINUTES must be between 0 and 180")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServeSettings:
        env = os.environ if environ is None else environ
        accounts = setting("DISPATCHER_PUSH_SERVICE_ACCOUNTS", env) or ""
        wait = setting("DISPATCHER_START_WAIT_MINUTES", env) or "30"
        try:
            wait_minutes = float(wait)
        except ValueError:
            raise ConfigError(
                f"DISPATCHER_START_WAIT_MINUTES must be a number of minutes, got {wait!r}"
            ) from None
        return cls(
            audience=setting("DISPATCHER_PUSH_AUDIENCE", env),
            service_accounts=tuple(
                sorted({a.strip().lower() for a in accounts.split(",") if a.strip()})
            ),
            certs_url=setting("DISPATCHER_PUSH_CERTS_URL", env) or cls.certs_url,
            start_wait_minutes=wait_minutes,
        )


def resolve_port(port: int | None, environ: dict[str, str] | None = None) -> int:
    """The port to listen on: --port when given, else $PORT (Cloud Run sets it), else 8080."""
    if port is not None:
        return port
    text = (setting("PORT", os.environ if environ is None else environ) or "").strip()
    if not text:
        return 8080
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"PORT must be a port number (1-65535), got {text[:20]!r}")
    return int(text)


# -- OIDC --------------------------------------------------------------------------------


class _CertsRequest:
    """google-auth's requests transport with a timeout on every call, and the signing
    certificates cached (so a push does not fetch them each time)."""

    def __init__(self, timeout: float = CERTS_TIMEOUT) -> None:
        import google.auth.transport.requests
        import requests

        self._session = requests.Session()
        self._request = google.auth.transport.requests.Request(self._session)
        self._timeout = timeout
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def __call__(self, url: str, method: str = "GET", body=None, headers=None,
                 timeout=None, **kwargs):  # fmt: skip
        if method != "GET" or body is not None:
            return self._request(url, method=method, body=body, headers=headers,
                                 timeout=self._timeout, **kwargs)  # fmt: skip
        with self._lock:
            cached = self._cache.get(url)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
        response = self._request(url, method="GET", headers=headers, timeout=self._timeout)
        if response.status == 200:
            with self._lock:
                self._cache[url] = (time.monotonic() + _max_age(response.headers), response)
        return response


def _max_age(headers: Any) -> float:
    for part in str((headers or {}).get("Cache-Control", "")).split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() == "max-age" and value.isdigit():
            return min(float(value), CERTS_MAX_AGE)
    return 300.0


class TokenVerifier:
    """Checks a Bearer token: Google's signature (certificates from certs_url), audience,
    issuer, expiry, a verified email among the allowed service accounts."""

    def __init__(self, push: ServeSettings) -> None:
        assert push.audience
        self.audience = push.audience
        self.accounts = frozenset(push.service_accounts)
        self.certs_url = push.certs_url
        self._request = _CertsRequest()

    def verify(self, authorization: str | None) -> str:
        """The caller's email, or Unauthorized (401/403) with a reason that quotes
        nothing of the token."""
        from google.auth import exceptions
        from google.oauth2 import id_token

        scheme, _, token = (authorization or "").strip().partition(" ")
        if not authorization:
            raise Unauthorized("no Authorization header: a Bearer OIDC token is required")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header is not `Bearer <token>`")
        try:
            claims = id_token.verify_token(
                token.strip(), self._request, audience=self.audience,
                certs_url=self.certs_url, clock_skew_in_seconds=CLOCK_SKEW,
            )  # fmt: skip
        except exceptions.TransportError as exc:
            raise RuntimeError(
                f"cannot fetch the token-signing certificates ({type(exc).__name__})"
            ) from None
        except (ValueError, exceptions.GoogleAuthError) as exc:
            raise Unauthorized(_token_problem(exc)) from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise Unauthorized("token issuer is not Google")
        email = str(claims.get("email") or "").lower()
        if not email:
            raise Unauthorized("token has no email claim", 403)
        if claims.get("email_verified") is not True:
            raise Unauthorized("token email is not verified", 403)
        if email not in self.accounts:
            raise Unauthorized(f"{email} is not in DISPATCHER_PUSH_SERVICE_ACCOUNTS", 403)
        return email


def _token_problem(exc: BaseException) -> str:
    """A fixed description of why a token was refused: google-auth's messages may quote
    the token, so they are never passed on."""
    text = str(exc).lower()
    for marker, reason in (
        ("expired", "token expired"),
        ("too early", "token used too early"),
        ("audience", "token audience is not this service"),
        ("certificate for key id", "token signed by an unknown key"),
        ("signature", "token signature is not valid"),
        ("could not verify", "token signature is not valid"),
    ):
        if marker in text:
            return reason
    return "token is malformed"


# -- the app -----------------------------------------------------------------------------


def _json(payload: dict[str, Any], status: int, headers: dict[str, str] | None = None):
    response = Response(json.dumps(payload, default=str), status=status,
                        mimetype="application/json")  # fmt: skip
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _error(status: int, message: str, **extra: Any):
    return _json({"error": message, "status": status, **extra}, status)


def create_app(
    settings: Settings,
    *,
    dispatcher: Dispatcher | None = None,
    push: ServeSettings | None = None,
    now: Callable[[], dt.datetime] | None = None,
) -> Flask:
    """The Flask app of `serve`. ``push``: default ServeSettings.from_env(); ``now``: the
    clock (aware UTC) used for "today in PT" and the /start wait."""
    dispatcher = dispatcher or Dispatcher(settings)
    push = push if push is not None else ServeSettings.from_env()
    clock = now or (lambda: dt.datetime.now(dt.UTC))
    verifier = TokenVerifier(push) if push.audience else None

    app = Flask("dispatcher")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]

    def today() -> dt.date:
        return clock().astimezone(PACIFIC).date()

    @app.before_request
    def authenticate():
        g.started = time.perf_counter()
        if request.path == "/health" or verifier is None:
            return None
        try:
            g.caller = verifier.verify(request.headers.get("Authorization"))
        except Unauthorized as exc:
            log("WARNING", f"refused: {exc}", path=request.path, status=exc.status)
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
            return _json({"error": str(exc), "status": exc.status}, exc.status, headers)
        return None

    @app.after_request
    def access_line(response: Response) -> Response:
        started = getattr(g, "started", None)
        log("INFO", f"{request.method} {request.path} {response.status_code}",
            method=request.method, path=request.path, status=response.status_code,
            caller=getattr(g, "caller", None), message_id=getattr(g, "message_id", None),
            duration_ms=None if started is None else int((time.perf_counter() - started) * 1000),
        )  # fmt: skip
        return response

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest):
        log("WARNING", f"refused: {exc}", path=request.path, field=exc.field, status=exc.status)
        return _error(exc.status, str(exc), field=exc.field)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        if isinstance(exc, RequestEntityTooLarge):
            return _error(413, f"request body is larger than {MAX_BODY_BYTES} bytes",
                          field="body")  # fmt: skip
        return _error(status, exc.description or exc.name)

    @app.errorhandler(Exception)
    def fault(exc: Exception):
        detail = " ".join(str(exc).split())[:400] or type(exc).__name__
        log("ERROR", f"{request.method} {request.path} failed: {type(exc).__name__}: {detail}",
            path=request.path)  # fmt: skip
        return _error(500, f"{type(exc).__name__}: {detail}")

    def answer(result: RunResult):
        status = STATUS_CODES.get(result.outcome, 500)
        headers = {}
        if result.retry_after_seconds is not None:
            headers["Retry-After"] = str(result.retry_after_seconds)
        return _json(result.as_json(), status, headers)

    def body_json() -> dict[str, Any]:
        raw = request.get_data(cache=True)
        if request.content_length is None and len(raw) >= MAX_BODY_BYTES:
            # A chunked body is cut at the limit (werkzeug's stream), not refused.
            raise BadRequest(f"request body is larger than {MAX_BODY_BYTES} bytes", "body", 413)
        if not raw.strip():
            return {}
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # too deep
            raise BadRequest("request body is not JSON", "body") from None
        if not isinstance(payload, dict):
            raise BadRequest("request body must be a JSON object", "body")
        return payload

    def scheduler_date() -> dt.date:
        payload = body_json()
        unknown = sorted(str(key)[:40] for key in payload if key != "game_date")
        if unknown:
            shown = ", ".join(repr(key) for key in unknown[:3])  # a key may hold a line break
            raise BadRequest(f"unknown field {shown}: only game_date is read", unknown[0])
        value = payload.get("game_date")
        if value is None:
            return today()
        try:
            return parse_game_date(value, today=today())
        except InvalidInput as exc:
            raise BadRequest(str(exc), "game_date") from None

    @app.post("/trigger")
    def trigger():
        envelope = body_json()
        message = envelope.get("message")
        if not isinstance(message, dict):
            raise BadRequest("push envelope has no message object", "message")
        g.message_id = _message_id(message)
        data = message.get("data")
        if not isinstance(data, str) or not data:
            raise BadRequest("message.data must be the base64 Phase 4 event", "message.data")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("message.data is not base64", "message.data") from None
        if len(raw) > MAX_EVENT_BYTES:
            raise BadRequest(f"event is larger than {MAX_EVENT_BYTES} bytes", "message.data",
                             413)  # fmt: skip
        try:
            event = parse_phase4_event(raw, today=today())
        except InvalidInput as exc:
            raise BadRequest(str(exc), "message.data") from None
        log("INFO", "Phase 4 completion event", game_date=event.game_date.isoformat(),
            message_id=g.message_id, subscription=_short(envelope.get("subscription")))  # fmt: skip
        return answer(dispatcher.trigger(event.game_date, trigger_source="pubsub"))

    @app.post("/start")
    def start():
        game_date = scheduler_date()
        scheduled_at = _schedule_time(request.headers.get(SCHEDULE_TIME_HEADER))
        return answer(dispatcher.start_check(
            game_date, scheduled_at=scheduled_at, wait_minutes=push.start_wait_minutes,
            now=clock(), retry_seconds=START_RETRY_SECONDS, trigger_source="scheduler",
        ))  # fmt: skip

    @app.post("/retry")
    def retry():
        return answer(dispatcher.retry(scheduler_date(), trigger_source="scheduler"))

    @app.post("/status")
    def status():
        return answer(dispatcher.status(scheduler_date(), trigger_source="scheduler"))

    @app.get("/health")
    def health():
        payload: dict[str, Any] = {"version": __version__, "warehouse": settings.warehouse}
        try:
            with dispatcher.warehouse() as wh:
                wh.query("select 1 as ok")
        except Exception as exc:
            log("ERROR", f"health: the warehouse does not answer: {type(exc).__name__}")
            return _json({**payload, "status": "unavailable", "warehouse_ok": False,
                          "error": type(exc).__name__}, 503)  # fmt: skip
        return _json({**payload, "status": "ok", "warehouse_ok": True}, 200)

    return app


def _message_id(message: dict[str, Any]) -> str | None:
    value = message.get("messageId") or message.get("message_id")
    return _short(value)


def _short(value: Any, limit: int = 120) -> str | None:
    return None if value is None else str(value)[:limit]


def _schedule_time(value: str | None) -> dt.datetime | None:
    """X-CloudScheduler-ScheduleTime (RFC 3339, UTC) as an aware datetime."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        utc = parsed.astimezone(dt.UTC) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):  # Overflow: 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise BadRequest(f"{SCHEDULE_TIME_HEADER} is not an RFC 3339 time: {text[:40]!r}",
                         SCHEDULE_TIME_HEADER) from None  # fmt: skip
    if utc is None:
        raise BadRequest(f"{SCHEDULE_TIME_HEADER} has no time zone", SCHEDULE_TIME_HEADER)
    return utc


# -- gunicorn ----------------------------------------------------------------------------


def worst_case_seconds(settings: Settings) -> float:
    """The longest a dispatch can take: its warehouse statements (about eight, each
    bounded by the query timeout), a publish bounded by the publish timeout and the
    confirm's three attempts with their back-off."""
    return 8 * settings.query_timeout_seconds + 2 * settings.publish_timeout_seconds + 3


def gunicorn_options(settings: Settings, *, host: str, port: int, workers: int,
                     threads: int) -> dict[str, Any]:  # fmt: skip
    """gunicorn's configuration: threads in one worker by default (DuckDB admits one
    writing process; more workers are for BigQuery), a worker timeout above the worst
    dispatch, a graceful stop on SIGTERM, no access log (each request logs one JSON line)."""
    options: dict[str, Any] = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": int(worst_case_seconds(settings)) + 60,
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": None,
        "logger_class": GunicornLogger,
        "proc_name": "dispatcher-serve",
    }
    if os.path.isdir("/dev/shm"):
        options["worker_tmp_dir"] = "/dev/shm"
    return options


def run(settings: Settings, push: ServeSettings, *, host: str, port: int, workers: int,
        threads: int) -> None:  # fmt: skip
    """Serve in the foreground until SIGTERM (graceful: requests in hand finish) or
    SIGINT."""
    from gunicorn.app.base import BaseApplication

    options = gunicorn_options(settings, host=host, port=port, workers=workers, threads=threads)

    class DispatcherApplication(BaseApplication):
        def load_config(self) -> None:
            assert self.cfg is not None
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return create_app(settings, push=push)

    DispatcherApplication().run()


class GunicornLogger(Logger):
    """gunicorn's own messages as the dispatcher's log lines (JSON off a terminal); no
    access log: each request logs its own line (create_app's after_request)."""

    def setup(self, cfg) -> None:
        self.cfg = cfg

    def _line(self, severity: str, msg: Any, args: tuple) -> None:
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = str(msg)
        log(severity, text, component="gunicorn")

    def critical(self, msg, *args, **kwargs) -> None:
        self._line("CRITICAL", msg, args)

    def error(self, msg, *args, **kwargs) -> None:
        self._line("ERROR", msg, args)

    def warning(self, msg, *args, **kwargs) -> None:
        self._line("WARNING", msg, args)

    def info(self, msg, *args, **kwargs) -> None:
        self._line("INFO", msg, args)

    def debug(self, msg, *args, **kwargs) -> None:
        return None

    def exception(self, msg, *args, **kwargs) -> None:
        self._line("ERROR", msg, args)

    def log(self, lvl, msg, *args, **kwargs) -> None:
        self._line("INFO", msg, args)

    def access(self, resp, req, environ, request_time) -> None:
        return None

    def reopen_files(self) -> None:
        return None

    def close_on_exec(self) -> None:
        return None
