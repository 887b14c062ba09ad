"""Generated malformed input for `serve` and `trigger --event` (tests/test_fuzz.py).

Each generator draws, from a seeded ``random.Random``, one input the contract refuses
and says how it must be answered: the HTTP status (400 or 413) and the ``field`` the
answer names, or exit 2 and the option the CLI's one ``Error:`` line names. Nothing is
valid by construction: where a draw could land on an accepted input (a string that is
a date after all, base64 that decodes), it is drawn again.

The dates are relative to the ``today`` the target sees; ``margin`` days keep the
"too far ahead" ones refused while the clock of a real server or CLI crosses midnight.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import datetime as dt
import json
import random
import string
from dataclasses import dataclass, field

from dispatcher.events import EARLIEST_GAME_DATE, MAX_DAYS_AHEAD, MAX_EVENT_BYTES
from dispatcher.serve import MAX_BODY_BYTES, SCHEDULE_TIME_HEADER

#: The keys of the Phase 4 completion event (docs/CONTRACT.md) and their kinds.
EVENT_STRINGS = ("event_type", "processor", "timestamp", "run_id")
EVENT_INTEGERS = ("players_processed", "players_ready", "players_failed")
EVENT_KEYS = ("game_date", *EVENT_STRINGS, *EVENT_INTEGERS)
SCHEDULER_ROUTES = ("/start", "/retry", "/status")

SQL = (
    "'; drop table nba_orchestration.request_ledger; --",
    "' or '1'='1",
    "1; delete from nba_orchestration.dispatch_runs",
    '" or ""="',
    "2026-11-28'); insert into nba_orchestration.request_outbox values (1); --",
    "'||(select count(*) from nba_orchestration.request_ledger)||'",
    "$1",
    "@game_date",
    "?",
    "%s",
    "{game_date}",
    "union select * from nba_predictions.player_prop_predictions",
    "/**/or/**/1=1",
    "\\'; --",
)
UNICODE = (
    "\u200b", "\u200e", "\u202e", "\ufeff", "\u2028", "\u0000", "\x7f", "é", "ß", "İ",
    "\u2010", "\u2212", "\uff0d", "🏀", "👨‍👩‍👧", "漢字", "\ud800", "\udfff", "\U0010ffff",
    "\u0301", "Ω", "ﬁ",
)  # fmt: skip
#: Decimal digits other than ASCII: `\d` matches them, fromisoformat refuses them.
OTHER_DIGITS = ("٠", "۰", "०", "০", "０", "๐", "߀", "𝟎")
NOT_TIMESTAMPS = (
    "yesterday", "now", "", "2026-13-45T99:99", "14:05 28/11/2026", "2026-11-28T25:00",
    "2026-11-28T14:05:00+25:00", "28 Nov 2026", "🏀", "2026-11-28T14:05:00ZZ", "T", "Z",
    "2026-02-30T00:00:00", "1764338700", "2026-11-28T14:05:00 UTC",
)  # fmt: skip
NOT_SCHEDULE_TIMES = (
    "yesterday", "2026-11-28T06:00:00", "2026-11-28", "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00", "2026-13-01T00:00:00Z", "Z", "2026-11-28T06:00:00+24:00",
    "06:00", "1764338400", "2026-11-28T06:00:00.000Z'; drop table x; --", "now()",
    "2026-02-30T06:00:00Z", "Sat, 28 Nov 2026 14:00:00 GMT",
)  # fmt: skip
CONTENT_TYPES = (
    None, "application/json", "application/octet-stream", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
    "application/json; charset=latin-1", "application/json; charset=utf-16", "image/png",
    "application/xml", "*/*", "application/cloudevents+json", "x" * 300, "application/",
)  # fmt: skip
BROKEN_JSON = (
    b'{"game_date": "2026-11-28",}', b"{'game_date': '2026-11-28'}", b"{game_date: 1}",
    b'{"game_date": "2026-11-28"}}', b'{"game_date": "2026-11-28"} x', b"{True: None}",
    b'{"game_date" "2026-11-28"}', b'{"game_date": "2026-11-28\n"}', b'{"a": "\\x41"}',
    b'{"a": "\\u12"}', b'{"a": undefined}', b"{/* c */}", b"{", b"}", b"[", b'{"a"',
    b'{"a":}', b"nul", b"tru", b'"unterminated', b"\x00", b"\x00{}", b"{}\x00", b"+1",
    b"01", b".5", b"--1", b"[1,]", b"{,}", b'{"a":1 "b":2}', b"\xef\xbb\xbf\xef\xbb\xbf{}",
    b'{"n": 1' + b"0" * 5000 + b"}",
)  # fmt: skip
NOT_UTF8 = (
    b"\xff", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xf0\x28\x8c\xbc",
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One malformed input and the answer it must get."""

    target: str  # "/trigger", "/start", "/retry", "/status" or "cli"
    kind: str  # the generator: what it breaks
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: HTTP: 400 or 413; CLI: 2.
    status: int = 400
    #: HTTP: the field the answer may name (JSON nested near the parser's depth limit
    #: is refused as not JSON, or for what it holds); CLI: what the Error line names.
    fields: tuple[str, ...] = ("body",)
    args: tuple[str, ...] = ()
    stdin: bytes | None = None
    #: The event as a file of its own (`--event-file PATH`), for the CLI.
    event_file: bytes | None = None
    chunked: bool = False

    def describe(self, limit: int = 600) -> str:
        shown = {
            "target": self.target, "kind": self.kind, "status": self.status,
            "fields": self.fields, "content_type": self.content_type, "headers": self.headers,
            "args": [a if len(a) <= 200 else a[:200] + f"...({len(a)} chars)" for a in self.args],
            "body": _cut(self.body, limit), "stdin": _cut(self.stdin, limit),
            "event_file": _cut(self.event_file, limit), "chunked": self.chunked,
        }  # fmt: skip
        return json.dumps({k: v for k, v in shown.items() if v not in (None, (), [], {}, "")})


def _cut(raw: bytes | None, limit: int) -> str | None:
    if raw is None:
        return None
    text = repr(raw[:limit])
    return text + (f"...({len(raw)} bytes)" if len(raw) > limit else "")


@dataclass
class Context:
    """What a target sees: its today, and days of margin for a clock that moves."""

    today: dt.date
    margin: int = 0

    @property
    def last_valid(self) -> dt.date:
        return self.today + dt.timedelta(days=MAX_DAYS_AHEAD)

    def valid_date(self, rng: random.Random) -> str:
        """A game date every target accepts (inside the window, away from its ends)."""
        lo = self.today - dt.timedelta(days=400)
        return (lo + dt.timedelta(days=rng.randrange(0, 400 + MAX_DAYS_AHEAD - self.margin))
                ).isoformat()  # fmt: skip

    def valid_event(self, rng: random.Random, game_date: str | None = None) -> dict:
        """A contract event, with a random subset of the optional keys."""
        event: dict = {"game_date": game_date or self.valid_date(rng)}
        full = {
            "event_type": "phase4_complete", "processor": "ml_feature_store_v2",
            "timestamp": "2026-11-28T08:31:00Z", "run_id": f"run-{rng.randrange(10**6)}",
            "players_processed": rng.randrange(0, 600), "players_ready": rng.randrange(0, 600),
            "players_failed": rng.randrange(0, 60),
        }  # fmt: skip
        for key, value in full.items():
            if rng.random() < 0.5:
                event[key] = value
        return event


# -- values ------------------------------------------------------------------------------


def _junk(rng: random.Random, size: int | None = None) -> str:
    """A string that is no date: it holds a character that is neither a digit, a hyphen
    nor white space, somewhere a strip() keeps."""
    size = size if size is not None else rng.choice((1, 2, 5, 10, 11, 40, 300))
    pool = string.printable + "".join(UNICODE) + "".join(SQL)
    text = "".join(rng.choice(pool) for _ in range(size))
    anchor = rng.choice(string.ascii_letters + "'\";/\\%@$?{}" + "".join(UNICODE[:3]))
    at = rng.randrange(len(text) + 1)
    return text[:at] + anchor + text[at:]


def bad_date_string(rng: random.Random, ctx: Context) -> str:
    """A string game_date refuses: not YYYY-MM-DD, no calendar date, or out of range."""
    good = ctx.valid_date(rng)
    y, m, d = good.split("-")
    kind = rng.randrange(12)
    if kind == 0:  # out of range: before 2000 (a real date)
        year = rng.choice((1999, 1970, 1900, 1, rng.randrange(1, EARLIEST_GAME_DATE.year)))
        return dt.date(year, rng.randrange(1, 13), rng.randrange(1, 29)).isoformat()
    if kind == 1:  # out of range: more than two weeks ahead
        ahead = ctx.last_valid + dt.timedelta(days=1 + ctx.margin + rng.choice(
            (0, 1, 2, 30, 365, rng.randrange(1, 2_900_000))
        ))  # fmt: skip
        return min(ahead, dt.date(9999, 12, 31)).isoformat()
    if kind == 2:  # impossible: no such day or month
        year = rng.randrange(2000, ctx.today.year + 1)
        month = rng.randrange(1, 13)
        last = calendar.monthrange(year, month)[1]
        if rng.random() < 0.5:
            return f"{year:04d}-{month:02d}-{rng.randrange(last + 1, 100):02d}"
        if rng.random() < 0.5:
            return f"{year:04d}-{rng.choice((0, *range(13, 100))):02d}-{int(d):02d}"
        return f"{year:04d}-{month:02d}-00"
    if kind == 3:
        return rng.choice(("2026-02-30", "2026-02-29", "2025-02-29", "2026-04-31",
                           "2026-06-31", "2026-09-31", "2026-11-31", "0000-01-01",
                           "2100-02-29", "1999-12-31", "1999-02-30"))  # fmt: skip
    if kind == 4:  # other spellings of a good date
        return rng.choice((
            f"{y}{m}{d}", f"{y}/{m}/{d}", f"{d}-{m}-{y}", f"{m}/{d}/{y}",
            f"{y}-{int(m)}-{d}" if m[0] == "0" else f"{y}-0{m}-{d}",
            f"{y}-{m}-{int(d)}" if d[0] == "0" else f"{y}-{m}-{d}0", f"{y[2:]}-{m}-{d}",
            f"+{y}-{m}-{d}", f"-{y}-{m}-{d}", f"{good}Z", f"{good}T00:00", f"{good} 00:00",
            f"{good}T00:00:00+00:00", f"0{good}", f"{y}-W48-1", f"{y}-333", f"{y}-{m}",
            f"{y}-{m}-{d}-", f"{y}--{m}-{d}", f"{y}_{m}_{d}", f"{y}.{m}.{d}", f"1{good}",
        ))  # fmt: skip
    if kind == 5:  # unicode inside a good date, or unicode digits
        if rng.random() < 0.5:
            at = rng.randrange(1, len(good))
            return good[:at] + rng.choice(UNICODE) + good[at:]
        zero = ord(rng.choice(OTHER_DIGITS))
        hyphen = rng.choice(("-", "\u2010", "\uff0d"))
        return "".join(chr(zero + int(c)) if c.isdigit() else c for c in good).replace("-", hyphen)
    if kind == 6:  # SQL after, before or instead of a date
        sql = rng.choice(SQL)
        return rng.choice((good + sql, sql + good, sql, f"{good}' or game_date > '2000-01-01"))
    if kind == 7:  # a second date, a new line
        return rng.choice((f"{good}\n{good}", f"{good},{good}", f"{good} {good}", f"{good};"))
    if kind == 8:
        return rng.choice(("", "today", "yesterday", "null", "None", "NaN", "undefined",
                           "YYYY-MM-DD", "0", "-1", "true", "2026-11-28\x00", "\x002026-11-28",
                           "1e9", "2026-11-28" + "\u0000" * 3, "{{7*7}}", "${jndi:x}",
                           "<script>alert(1)</script>", "../../etc/passwd"))  # fmt: skip
    if kind == 9:  # ten characters of no date
        return _junk(rng, 9)
    if kind == 10:  # long
        return good + "0" * rng.choice((1, 100, 10_000))
    return _junk(rng)


def bad_date_value(rng: random.Random, ctx: Context, *, allow_null: bool) -> object:
    """A game_date value the rule refuses: a bad string or no string at all."""
    if rng.random() < 0.6:
        return bad_date_string(rng, ctx)
    good = ctx.valid_date(rng)
    choices: list[object] = [
        int(good.replace("-", "")), 0, -1, 2026, 2026.1128, 1e308, float("inf"),
        float("nan"), True, False, [good], [], [good, good], {"date": good}, {},
        10**300, -(10**30), [[[[good]]]],
    ]  # fmt: skip
    if allow_null:
        choices.append(None)
    return rng.choice(choices)


def unknown_key(rng: random.Random) -> str:
    """A key outside the event contract and other than game_date."""
    while True:
        key = rng.choice((
            "players_total", "force", "GAME_DATE", "game_date ", " game_date", "gameDate",
            "game-date", "Game_Date", "date", "", " ", "message", "attributes", "data",
            rng.choice(SQL), rng.choice(UNICODE), "k" * rng.choice((41, 200, 5000)),
            _junk(rng, rng.randrange(1, 30)), "__proto__", "constructor", "$where",
            "players_ready\u200b", "ｇａｍｅ＿ｄａｔｅ",
        ))  # fmt: skip
        if key not in EVENT_KEYS:
            return key


def wrong_type(rng: random.Random, name: str) -> object:
    """A value of the wrong kind for an optional event key (never null: null is allowed)."""
    if name in EVENT_STRINGS:
        return rng.choice((1, 0, -1, 2.5, True, False, ["x"], [], {"a": 1}, {}, 10**20))
    return rng.choice((
        "1", "many", "", 1.5, 0.0, 3.0, -1, -(10**12), True, False, [1], [], {"n": 1}, {},
        float("nan"), float("inf"), "١٢",
    ))  # fmt: skip


def nested(rng: random.Random, depth: int) -> str:
    """JSON text nested ``depth`` deep, arrays or objects."""
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


#: json.loads raises RecursionError past this depth whatever the stack (the limit is 1,000).
TOO_DEEP = 1_000


def deep_depth(rng: random.Random, limit: int) -> int:
    """Mostly past the limit; a share just under it, where the value parses (or not,
    as deep as the caller's stack already is) and must be refused for what it is."""
    return rng.choice((900, 950, 990, 999, TOO_DEEP, 1001, 1500, 3000,
                       rng.randrange(800, limit)))  # fmt: skip


# -- the event (base64 in a push, --event or --event-file on the CLI) ----------------------


def bad_event(rng: random.Random, ctx: Context) -> tuple[str, bytes]:
    """(kind, event bytes) of an event parse_phase4_event refuses (by its size alone
    when over MAX_EVENT_BYTES)."""
    kind = rng.choice((
        "no game_date", "bad game_date", "bad game_date", "bad game_date", "unknown key",
        "wrong type", "event_type", "timestamp", "not an object", "broken JSON",
        "not utf-8", "deeply nested", "too large", "several faults",
    ))  # fmt: skip
    event = ctx.valid_event(rng)
    if kind == "no game_date":
        del event["game_date"]
        if rng.random() < 0.3:
            event["date"] = ctx.valid_date(rng)
            kind = "no game_date (a date under another key)"
    elif kind == "bad game_date":
        event["game_date"] = bad_date_value(rng, ctx, allow_null=True)
    elif kind == "unknown key":
        for _ in range(rng.choice((1, 1, 2, 3, 4, 10))):
            event[unknown_key(rng)] = rng.choice((1, "x", None, True, [], {}, rng.choice(SQL)))
    elif kind == "wrong type":
        name = rng.choice(EVENT_STRINGS + EVENT_INTEGERS)
        event[name] = wrong_type(rng, name)
    elif kind == "event_type":
        event["event_type"] = rng.choice((
            "phase3_complete", "PHASE4_COMPLETE", "phase4_complete ", " phase4_complete", "",
            "phase4-complete", "phase4_completed", rng.choice(SQL), _junk(rng),
            "phase4_complete\u200b", "phase4_complete\x00",
        ))  # fmt: skip
    elif kind == "timestamp":
        event["timestamp"] = rng.choice(NOT_TIMESTAMPS)
    elif kind == "not an object":
        raw = json.dumps(rng.choice(([event], [], "2026-11-28", 20261128, None, True, 1.5,
                                     [event["game_date"]], ctx.valid_date(rng))))  # fmt: skip
        return kind, raw.encode()
    elif kind == "broken JSON":
        return kind, _broken_json(rng, event)
    elif kind == "not utf-8":
        text = json.dumps(event).encode()
        at = rng.randrange(len(text) + 1)
        return kind, text[:at] + rng.choice(NOT_UTF8) + text[at:]
    elif kind == "deeply nested":
        depth = deep_depth(rng, 20_000)
        if rng.random() < 0.5:
            return kind, nested(rng, depth).encode()
        value = nested(rng, depth)
        key = rng.choice(EVENT_KEYS)
        event.pop(key, None)
        text = json.dumps(event)
        comma = ", " if event else ""
        return kind, (text[:-1] + comma + f'"{key}": {value}}}').encode()
    elif kind == "too large":
        pad = MAX_EVENT_BYTES + 1 + rng.choice((0, 1, 100, 5_000, 10_000))
        if rng.random() < 0.5:
            event["run_id"] = "r" * pad
            return kind, json.dumps(event).encode()
        return kind, json.dumps(event).encode() + b" " * pad
    else:
        faults = rng.sample(range(4), rng.choice((2, 3)))
        for fault in faults:
            if fault == 0:
                event["game_date"] = bad_date_value(rng, ctx, allow_null=True)
            elif fault == 1:
                event[unknown_key(rng)] = 1
            elif fault == 2:
                name = rng.choice(EVENT_STRINGS + EVENT_INTEGERS)
                event[name] = wrong_type(rng, name)
            else:
                event["event_type"] = "phase3_complete"
    # Not ASCII-escaped, a lone surrogate is written as UTF-8 bytes of its own (which
    # json.loads reads back): the CLI takes those through --event-file.
    text = json.dumps(event, ensure_ascii=rng.random() < 0.5, allow_nan=True)
    return kind, text.encode("utf-8", "surrogatepass")


def _broken_json(rng: random.Random, event: dict) -> bytes:
    text = json.dumps(event).encode()
    choice = rng.randrange(3)
    if choice == 0:  # a proper prefix of an object is never JSON
        return text[: rng.randrange(1, len(text))]
    if choice == 1:  # something after the object
        return text + rng.choice((b"}", b",", b"x", b"{}", b"]", b"\x00", b"'", b"/"))
    return rng.choice(BROKEN_JSON)


# -- POST /trigger: the push envelope --------------------------------------------------------


def envelope(data: object, rng: random.Random | None = None, extra: dict | None = None) -> dict:
    """A push envelope around ``data`` (message.data), with Pub/Sub's other fields."""
    message: dict = {"data": data, "messageId": "m-fuzz", "message_id": "m-fuzz",
                     "attributes": {"source": "phase4"},
                     "publishTime": "2026-11-28T08:31:00Z"}  # fmt: skip
    if rng is not None:
        for key in [k for k in message if k != "data"]:
            if rng.random() < 0.3:
                del message[key]
    return {"message": message, "subscription": "projects/p/subscriptions/s", **(extra or {})}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def broken_base64(rng: random.Random, raw: bytes) -> str:
    """A string base64.b64decode(validate=True) refuses, near the base64 of ``raw``."""
    good = b64(raw)
    while True:
        how = rng.randrange(5)
        if how == 0:  # a character outside the alphabet
            bad = rng.choice("!#$%&()*,-.:;<>?@[]^_`{|}~ \t\n\r" + "".join(UNICODE) + "é")
            at = rng.randrange(len(good) + 1)
            text = good[:at] + bad + good[at:]
        elif how == 1:  # characters missing
            cut = rng.randrange(1, 4)
            text = good[: len(good) - cut] if rng.random() < 0.5 else good[cut:]
        elif how == 2:  # padding in the middle
            at = rng.randrange(len(good) + 1)
            text = good[:at] + rng.choice(("=", "==", "===")) + good[at:]
        elif how == 3:  # the URL-safe alphabet
            text = good.replace("+", "-").replace("/", "_") + rng.choice(("-", "_"))
        else:
            text = rng.choice(("%%%not base64%%%", "=", "====", "a", "ab=", "YQ", "Y===",
                               "data:application/json;base64," + good, good + "\x00",
                               "0x" + raw.hex(), good.encode().hex()))  # fmt: skip
        try:
            base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return text


def _sized(status: int, fields: tuple[str, ...], raw: bytes) -> tuple[int, tuple[str, ...]]:
    """A body over the limit is refused for its size before anything is read."""
    return (413, ("body",)) if len(raw) > MAX_BODY_BYTES else (status, fields)


def trigger_case(rng: random.Random, ctx: Context) -> Case:
    kind = rng.choice((
        "event", "event", "event", "event", "event", "broken base64", "broken base64",
        "data not a string", "no data", "message not an object", "no message",
        "body not JSON", "body not an object", "body too large", "event too large",
        "deeply nested body", "deeply nested message", "empty body",
    ))  # fmt: skip
    content_type = rng.choice(CONTENT_TYPES)
    event = json.dumps(ctx.valid_event(rng)).encode()

    def case(body: dict | bytes, status: int, *fields: str, name: str = kind) -> Case:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, fields = _sized(status, fields, raw)
        return Case("/trigger", name, raw, content_type, status=status, fields=fields)

    if kind == "event":
        what, raw = bad_event(rng, ctx)
        extra = {unknown_key(rng): "x"} if rng.random() < 0.2 else {}  # ignored by serve
        extra.pop("message", None)
        return case(envelope(b64(raw), rng, extra), 413 if len(raw) > MAX_EVENT_BYTES else 400,
                    "message.data", name=f"event: {what}")  # fmt: skip
    if kind == "event too large":
        # Under the body limit, over the event limit once decoded.
        raw = b'{"game_date": "2026-11-28", "run_id": "' + b"r" * (MAX_EVENT_BYTES + 1) + b'"}'
        return case(envelope(b64(raw)), 413, "message.data")
    if kind == "broken base64":
        return case(envelope(broken_base64(rng, event), rng), 400, "message.data")
    if kind == "data not a string":
        data = rng.choice(([b64(event)], {"game_date": "2026-11-28"}, json.loads(event), 1,
                           True, None, "", 0, []))  # fmt: skip
        return case(envelope(data, rng), 400, "message.data")
    if kind == "no data":
        body = envelope(b64(event), rng)
        del body["message"]["data"]
        if rng.random() < 0.5:
            body["message"]["Data"] = b64(event)
        return case(body, 400, "message.data")
    if kind == "message not an object":
        value = rng.choice((b64(event), [b64(event)], 1, None, True, "", [{"data": b64(event)}]))
        return case({"message": value, "subscription": "s"}, 400, "message")
    if kind == "no message":
        body = rng.choice(({}, {"subscription": "s"}, {"data": b64(event)},
                           {"Message": envelope(b64(event))["message"]},
                           json.loads(event)))  # fmt: skip
        return case(body, 400, "message")
    if kind == "empty body":
        # (Flask's test client turns an empty multipart body into an empty form.)
        content_type = rng.choice([c for c in CONTENT_TYPES if not (c or "").startswith("multi")])
        return case(rng.choice((b"", b" ", b"\n", b"\r\n\t ", b"{}")), 400, "message")
    if kind == "body not JSON":
        return case(_not_json(rng, json.dumps(envelope(b64(event))).encode()), 400, "body")
    if kind == "body not an object":
        value = rng.choice(([envelope(b64(event))], [], "x", 1, None, True, b64(event)))
        return case(json.dumps(value).encode(), 400, "body")
    depth = deep_depth(rng, 50_000)
    if kind == "deeply nested body":  # a list is no object, {"a": ...} has no message
        return case(nested(rng, depth).encode(), 400, "body", "message")
    if kind == "deeply nested message":  # a list is no object, {"a": ...} has no data
        return case(f'{{"message": {nested(rng, depth)}}}'.encode(), 400, "body", "message",
                    "message.data")  # fmt: skip
    return case(_too_large(rng, json.dumps(envelope(b64(event))).encode()), 413, "body")


#: What a JSON text may start with (after white space).
_JSON_STARTS = b'[{"-0123456789tfn'


def _not_json(rng: random.Random, text: bytes) -> bytes:
    """Bytes that are not JSON and not blank (a blank body reads as {})."""
    how = rng.randrange(4)
    if how == 0:  # a proper prefix of an object
        return text[: rng.randrange(1, len(text))]
    if how == 1:  # bytes that are no UTF-8 (JSON is UTF-8, or UTF-16/32 read by its zeros)
        at = rng.randrange(len(text) + 1)
        return text[:at] + rng.choice(NOT_UTF8) + text[at:]
    if how == 2:
        return rng.choice(BROKEN_JSON)
    # Junk that starts with what no JSON text starts with; no zero byte, so it is read as UTF-8.
    first = rng.choice([c for c in string.printable.encode() if c not in _JSON_STARTS
                        and not bytes([c]).isspace()])  # fmt: skip
    return bytes([first]) + bytes(rng.randrange(1, 256) for _ in range(rng.choice((0, 9, 999))))


def _too_large(rng: random.Random, body: bytes) -> bytes:
    over = MAX_BODY_BYTES + rng.choice((1, 2, 1000, MAX_BODY_BYTES, 5 * MAX_BODY_BYTES))
    filler = rng.choice((b" ", b"x", b"\x00"))
    return body + filler * (over - len(body)) if rng.random() < 0.7 else filler * over


# -- POST /start, /retry, /status: {"game_date": ...} ----------------------------------------


def scheduler_case(rng: random.Random, ctx: Context, route: str) -> Case:
    kinds = ["bad game_date", "bad game_date", "bad game_date", "unknown key", "unknown key",
             "body not JSON", "body not an object", "body too large", "deeply nested body",
             "deeply nested game_date"]  # fmt: skip
    if route == "/start":
        kinds += ["schedule time", "schedule time"]
    kind = rng.choice(kinds)
    content_type = rng.choice(CONTENT_TYPES)

    def case(body: dict | bytes, status: int, *fields: str, headers: dict | None = None) -> Case:
        raw = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
        status, fields = _sized(status, fields, raw)
        return Case(route, kind, raw, content_type, headers or {}, status=status, fields=fields)

    if kind == "bad game_date":
        return case({"game_date": bad_date_value(rng, ctx, allow_null=False)}, 400, "game_date")
    if kind == "unknown key":
        body: dict = {"game_date": ctx.valid_date(rng)} if rng.random() < 0.7 else {}
        if rng.random() < 0.3:
            body["game_date"] = bad_date_value(rng, ctx, allow_null=True)
        keys = {unknown_key(rng) for _ in range(rng.choice((1, 1, 2, 5)))}
        for key in keys:
            body[key] = rng.choice((True, "2026-11-28", None, 1, rng.choice(SQL)))
        # The answer names the first unknown key (sorted, cut to 40 characters).
        return case(body, 400, min(key[:40] for key in keys))
    if kind == "body not JSON":
        return case(_not_json(rng, json.dumps({"game_date": ctx.valid_date(rng)}).encode()),
                    400, "body")  # fmt: skip
    if kind == "body not an object":
        good = ctx.valid_date(rng)
        value = rng.choice(([{"game_date": good}], good, 1, None, True, [], 20261128))
        return case(json.dumps(value).encode(), 400, "body")
    if kind == "deeply nested body":  # a list is no object, {"a": ...} has an unknown key
        return case(nested(rng, deep_depth(rng, 50_000)).encode(), 400, "body", "a")
    if kind == "deeply nested game_date":  # too deep, or no string
        return case(f'{{"game_date": {nested(rng, deep_depth(rng, 50_000))}}}'.encode(), 400,
                    "body", "game_date")  # fmt: skip
    if kind == "body too large":
        return case(_too_large(rng, json.dumps({"game_date": ctx.valid_date(rng)}).encode()),
                    413, "body")  # fmt: skip
    value = rng.choice(NOT_SCHEDULE_TIMES)
    body = {"game_date": ctx.valid_date(rng)} if rng.random() < 0.8 else {}
    return case(body, 400, SCHEDULE_TIME_HEADER, headers={SCHEDULE_TIME_HEADER: value})


def http_case(rng: random.Random, ctx: Context) -> Case:
    """One malformed request to one of the four POST routes."""
    if rng.random() < 0.55:
        return trigger_case(rng, ctx)
    return scheduler_case(rng, ctx, rng.choice(SCHEDULER_ROUTES))


# -- the CLI: trigger --event / --event-file / --game-date ------------------------------------


def cli_case(rng: random.Random, ctx: Context) -> Case:
    """`dispatcher trigger ...` arguments the CLI refuses with exit 2; ``fields``: what
    its Error line names."""
    kind = rng.choice(("--event", "--event", "--event", "--event-file -", "--event-file -",
                       "--event-file PATH", "--game-date", "disagreeing dates",
                       "both event options"))  # fmt: skip
    what, raw = bad_event(rng, ctx)
    if kind == "--event":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            kind = "--event-file -"
        else:
            return Case("cli", f"--event: {what}", status=2, fields=("'--event'",),
                        args=("trigger", "--event", text))  # fmt: skip
    if kind == "--event-file -":
        return Case("cli", f"--event-file -: {what}", status=2, fields=("'--event'",),
                    args=("trigger", "--event-file", "-"), stdin=raw)  # fmt: skip
    if kind == "--event-file PATH":
        return Case("cli", f"--event-file PATH: {what}", status=2, fields=("'--event'",),
                    args=("trigger", "--event-file"), event_file=raw)  # fmt: skip
    event = json.dumps(ctx.valid_event(rng))
    if kind == "--game-date":
        extra = ("--event", event) if rng.random() < 0.3 else ()
        return Case("cli", kind, status=2, fields=("'--game-date'",),
                    args=("trigger", *extra, "--game-date", bad_date_string(rng, ctx)))  # fmt: skip
    if kind == "disagreeing dates":
        good = json.loads(event)["game_date"]
        other = good
        while other == good:
            other = ctx.valid_date(rng)
        return Case("cli", kind, status=2, fields=("'--game-date'",),
                    args=("trigger", "--event", event, "--game-date", other))  # fmt: skip
    return Case("cli", kind, status=2, fields=("--event-file",),
                args=("trigger", "--event", event, "--event-file", "-"), stdin=raw)  # fmt: skip
