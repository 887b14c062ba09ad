"""Malformed input to `serve` and `trigger --event`: refused with a reason, never a fault.

Generated inputs (tests/fuzz_inputs.py, seeded: the seed and the input are in every
failure) go to POST /trigger (the push envelope) and the Scheduler routes POST /start,
/retry, /status: over real HTTP to `dispatcher serve` under gunicorn, and in bulk
through Flask's test client; and to `dispatcher trigger --event / --event-file /
--game-date`: in bulk through click's CliRunner, a few as real processes. Each one must
be answered 400 or 413 with a JSON ``{"error", "field"}`` (or exit 2 with one ``Error:``
line naming the option), with nothing read or written: no dispatch begun, every table
of the warehouse as it was (ledger, outbox, run log), so nothing published. After the
lot the server is healthy and a valid push still dispatches every pending player once.

FUZZ_SEED replays a run; FUZZ_INPUTS sets how many inputs in all (default 10,000).
The inputs the fuzz found faulting are kept as plain cases at the end.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import http.client
import io
import json
import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fuzz_inputs import SQL, Case, Context, cli_case, envelope, http_case
from reliability import record
from serving import DISPATCHER, serve_env, start_serve
from warehouses import build_template, copy_of

from dispatcher import cli as cli_module
from dispatcher import marts
from dispatcher.cli import cli, today_pacific
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher
from dispatcher.sandbox.slate import SlateSpec
from dispatcher.serve import MAX_BODY_BYTES, SCHEDULE_TIME_HEADER, ServeSettings, create_app
from dispatcher.warehouse import connect

SEED_ENV, INPUTS_ENV = "FUZZ_SEED", "FUZZ_INPUTS"
SEED = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**32))
INPUTS = int(os.environ.get(INPUTS_ENV) or 10_000)
#: Real processes of the installed CLI (each about 0.1 s), out of the CLI's share.
SUBPROCESSES = 20
#: Shares of INPUTS: real HTTP under gunicorn, Flask's test client, click's CliRunner.
SHARES = {"gunicorn": 0.3, "test client": 0.4, "cli": 0.3}
#: Inputs between two reads of the warehouse's tables (and at the end).
CHECK_EVERY = 500
#: Failures shown before the test stops.
SHOWN = 5

READY = dt.date(2026, 11, 28)  # Phase 4 ready, players pending
SPEC = SlateSpec(game_date=READY, share_predicted=0.3, share_in_flight=0.1, seed=7)
#: "Now" of the in-process app: 06:10 PT on the ready date.
NOW = dt.datetime(2026, 11, 28, 14, 10, tzinfo=dt.UTC)
SCHEDULER_ROUTES = ("/start", "/retry", "/status")
CONTRACT_TABLES = (
    "nba_orchestration.request_ledger", "nba_orchestration.request_outbox",
    "nba_orchestration.dispatch_runs",
)  # fmt: skip
#: A valid event whose strings look like SQL: accepted, and harmless.
SQL_LOOKING_EVENT = {"event_type": "phase4_complete", "game_date": str(READY),
                     "processor": SQL[0], "run_id": SQL[1]}  # fmt: skip


def _share(part: str) -> int:
    return max(1, round(INPUTS * SHARES[part]))


def _rng(part: str) -> random.Random:
    """Each part its own stream of the seed: one replays alone as it ran with the rest."""
    return random.Random(f"{SEED}:{part}")


def _replay(index: int, case: Case, problem: str) -> str:
    return (f"input #{index} ({SEED_ENV}={SEED} {INPUTS_ENV}={INPUTS} replays it):"
            f" {problem}\n  {case.describe()}")  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory, tally):
    started = time.monotonic()
    path = build_template(tmp_path_factory.mktemp("fuzz"), [SPEC], tests=False)
    tally["template seconds"] = round(time.monotonic() - started, 1)
    return path


#: dbt's data and unit tests left out: other suites run them; the models are the same.
@pytest.fixture(scope="module")
def tally():
    """The figures of each part, recorded once all of them held."""
    parts: dict[str, Any] = {}
    yield parts
    build = parts.pop("template seconds", None)
    if set(parts) == set(SHARES):
        by_target: Counter = Counter()
        by_path: dict[str, int] = {}
        answered: Counter = Counter()
        for figures in parts.values():
            by_target.update(figures["by_target"])
            answered.update(figures["answered"])
            by_path.update(figures["by_path"])
        seconds = {"template": build, **{k: v["seconds"] for k, v in parts.items()}}
        record("fuzz", inputs=sum(by_path.values()), by_target=dict(by_target),
               by_path=by_path, answered=dict(answered), written=0, published=0,
               seed=SEED, seconds=seconds, chunked=parts["gunicorn"]["chunked"])  # fmt: skip


def footprint(settings: Settings) -> dict[str, tuple[int, int | None]]:
    """(rows, a hash of their contents) of every table in the warehouse file (the views
    are computed from them): an insert, a delete or an update changes it."""
    wh = connect(settings)
    try:
        tables = [f'"{row["s"]}"."{row["t"]}"' for row in wh.query(
            "select table_schema as s, table_name as t from information_schema.tables"
            " where table_type = 'BASE TABLE' order by all"
        )]  # fmt: skip
        counts = wh.query(" union all ".join(
            f"select '{name}' as name, count(*) as n, bit_xor(hash(t)) as h from {name} as t"
            for name in tables
        ))  # fmt: skip
    finally:
        wh.close()
    found = {row["name"].replace('"', ""): (row["n"], row["h"]) for row in counts}
    assert set(CONTRACT_TABLES) <= set(found), found
    return found


def pending_players(settings: Settings) -> int:
    wh = connect(settings)
    try:
        return len(marts.pending(wh, READY))
    finally:
        wh.close()


class Unchanged:
    """The warehouse's tables as they were: read every CHECK_EVERY inputs and at the end."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.before = footprint(settings)

    def check(self, window: list[tuple[int, Case]]) -> None:
        now = footprint(self.settings)
        changed = {k: (self.before.get(k), n) for k, n in now.items() if self.before.get(k) != n}
        assert not changed, (
            f"a refused input wrote {changed} ({SEED_ENV}={SEED}); one of:\n"
            + "\n".join(_replay(i, case, "") for i, case in window)
        )
        window.clear()


def _answer_problem(case: Case, status: int, content_type: str | None, raw: bytes) -> str | None:
    """What is wrong with an HTTP answer to a malformed input, or None."""
    if content_type != "application/json":
        return f"answered {status} with Content-Type {content_type!r}: {raw[:300]!r}"
    try:
        body = json.loads(raw)
    except ValueError:
        return f"answered {status} with a body that is not JSON: {raw[:300]!r}"
    if status != case.status:
        return f"answered {status}, not {case.status}: {body}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, str) or not error.strip() or "\n" in error:
        return f"the answer has no one-line reason: {body}"
    if body.get("field") not in case.fields:
        return f"the answer names field {body.get('field')!r}, not {case.fields}: {body}"
    if body.get("status") != status:
        return f"the answer's status {body.get('status')!r} is not {status}"
    return None


def _target(case: Case) -> str:
    return f"POST {case.target}"


# -- POST routes, in process (Flask's test client) --------------------------------------------


class Watched(Dispatcher):
    """A Dispatcher that notes every call: a refused request must make none."""

    calls: list[str]

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.calls = []

    def warehouse(self):
        self.calls.append("warehouse")
        return super().warehouse()

    def trigger(self, *args, **kwargs):
        self.calls.append("trigger")
        return super().trigger(*args, **kwargs)

    def start_check(self, *args, **kwargs):
        self.calls.append("start_check")
        return super().start_check(*args, **kwargs)

    def retry(self, *args, **kwargs):
        self.calls.append("retry")
        return super().retry(*args, **kwargs)

    def status(self, *args, **kwargs):
        self.calls.append("status")
        return super().status(*args, **kwargs)


def test_serve_in_process_refuses_every_malformed_input(template, tmp_path, tally):
    started = time.monotonic()
    settings = copy_of(template, tmp_path)
    watched = Watched(settings)
    client = create_app(settings, dispatcher=watched, push=ServeSettings(),
                        now=lambda: NOW).test_client()  # fmt: skip
    unchanged = Unchanged(settings)
    rng, ctx = _rng("test client"), Context(today=NOW.date())
    problems: list[str] = []
    window: list[tuple[int, Case]] = []
    answered: Counter = Counter()
    by_target: Counter = Counter()
    for index in range(_share("test client")):
        case = http_case(rng, ctx)
        response = client.post(case.target, data=case.body, content_type=case.content_type,
                               headers=case.headers)  # fmt: skip
        problem = _answer_problem(case, response.status_code, response.mimetype,
                                  response.get_data())  # fmt: skip
        if problem is None and watched.calls:
            problem = f"a refused request called the dispatcher: {watched.calls}"
        if problem:
            problems.append(_replay(index, case, problem))
            if len(problems) >= SHOWN:
                break
        watched.calls.clear()
        answered[str(response.status_code)] += 1
        by_target[_target(case)] += 1
        window.append((index, case))
        if len(window) >= CHECK_EVERY:
            assert not problems, "\n".join(problems)
            unchanged.check(window)
    assert not problems, "\n".join(problems)
    unchanged.check(window)

    # Healthy after, and a valid push still dispatches every pending player, once.
    assert client.get("/health").status_code == 200
    pending = pending_players(settings)
    before = footprint(settings)
    response = client.post("/trigger", json=envelope(
        base64.b64encode(json.dumps(SQL_LOOKING_EVENT).encode()).decode()
    ))  # fmt: skip
    assert response.status_code == 200, response.json
    assert (response.json["outcome"], response.json["requests_published"]) == (
        "dispatched", pending)  # fmt: skip
    _assert_one_dispatch(before, footprint(settings), pending)
    tally["test client"] = {"by_target": by_target, "answered": answered,
                            "by_path": {"Flask test client": sum(by_target.values())},
                            "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def _assert_one_dispatch(before: dict, after: dict, pending: int) -> None:
    """One dispatch of ``pending`` players: that many claims and messages, one run row."""
    assert pending > 0
    ledger, outbox, runs = CONTRACT_TABLES
    assert after[ledger][0] - before[ledger][0] == pending
    assert after[outbox][0] - before[outbox][0] == pending
    assert after[runs][0] - before[runs][0] == 1


# -- POST routes over real HTTP: `dispatcher serve` under gunicorn -------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection to the server, opened again when it closes."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._conn: http.client.HTTPConnection | None = None

    def post(self, case: Case) -> tuple[int, str | None, bytes]:
        headers = dict(case.headers)
        if case.content_type is not None:
            headers["Content-Type"] = case.content_type
        for attempt in (1, 2):
            conn = self._conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self._conn = conn
            try:
                if case.chunked:
                    chunks = (case.body[i : i + 8192] for i in range(0, len(case.body), 8192))
                    conn.request("POST", case.target, body=chunks, headers=headers,
                                 encode_chunked=True)  # fmt: skip
                else:
                    conn.request("POST", case.target, body=case.body, headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except (ConnectionError, http.client.RemoteDisconnected):
                # The server may close a kept-alive connection between two requests.
                self.close()
                if attempt == 2:
                    raise
                continue
            if response.will_close:
                self.close()
            mimetype = (response.getheader("Content-Type") or "").split(";")[0] or None
            return response.status, mimetype, raw
        raise AssertionError("unreachable")

    def get(self, path: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        finally:
            conn.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def test_serve_under_gunicorn_refuses_every_malformed_input(template, tmp_path, tally):
    started = time.monotonic()
    settings = copy_of(template, tmp_path)
    unchanged = Unchanged(settings)
    # The server's today is the real one, in PT: two days of margin past midnight.
    rng, ctx = _rng("gunicorn"), Context(today=today_pacific(), margin=2)
    server = start_serve(tmp_path, serve_env(settings))
    connection = Connection(server.port)
    problems: list[str] = []
    window: list[tuple[int, Case]] = []
    answered: Counter = Counter()
    by_target: Counter = Counter()
    chunked = 0
    try:
        for index in range(_share("gunicorn")):
            case = http_case(rng, ctx)
            if rng.random() < 0.05:  # no Content-Length: the limit holds on the stream
                case = dataclasses.replace(case, chunked=True)
                chunked += 1
            try:
                status, mimetype, raw = connection.post(case)
            except (OSError, http.client.HTTPException) as exc:
                problems.append(_replay(index, case, f"no answer: {exc!r}"))
                break
            problem = _answer_problem(case, status, mimetype, raw)
            if problem:
                problems.append(_replay(index, case, problem))
                if len(problems) >= SHOWN:
                    break
            answered[str(status)] += 1
            by_target[_target(case)] += 1
            window.append((index, case))
            if len(window) >= CHECK_EVERY:
                assert not problems, "\n".join(problems)
                connection.close()  # the server's file is free between requests
                unchanged.check(window)
        connection.close()
        assert not problems, "\n".join(problems)
        unchanged.check(window)

        assert connection.get("/health") == 200
        pending = pending_players(settings)
        before = footprint(settings)
        data = base64.b64encode(json.dumps(SQL_LOOKING_EVENT).encode()).decode()
        valid = Case("/trigger", "valid", json.dumps(envelope(data)).encode(), "application/json")
        status, _, raw = connection.post(valid)
        connection.close()
        assert status == 200, raw
        answer = json.loads(raw)
        assert (answer["outcome"], answer["requests_published"]) == ("dispatched", pending)
        _assert_one_dispatch(before, footprint(settings), pending)
        assert connection.get("/health") == 200
    finally:
        connection.close()
        server.stop()
    # The app itself answered each one (its access line), and nothing faulted.
    entries = [json.loads(line) for line in server.log_path.read_text().splitlines()[1:]]
    refused = Counter(str(e["status"]) for e in entries
                      if e.get("method") == "POST" and e.get("status") in (400, 413))  # fmt: skip
    assert refused == answered, (refused, answered)
    faults = [e for e in entries if " failed: " in e["message"] or e.get("status") == 500]
    assert not faults, faults[:5]
    tally["gunicorn"] = {"by_target": by_target, "answered": answered,
                         "by_path": {"gunicorn (real HTTP)": sum(by_target.values())},
                         "chunked": chunked,
                         "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


# -- the CLI: trigger --event / --event-file / --game-date ----------------------------------------


def _cli_env(settings: Settings) -> dict[str, str]:
    return {"DISPATCHER_WAREHOUSE": "duckdb", "DISPATCHER_TRANSPORT": "local",
            "DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path),
            "DISPATCHER_DBT_TARGET_PATH": str(settings.dbt_target_path),
            "DISPATCHER_LOG_FORMAT": "json"}  # fmt: skip


def _refusal_problem(case: Case, code: int, stdout: str, stderr: str) -> str | None:
    """What is wrong with the CLI's answer to a malformed input, or None."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    if code != 2:
        return f"exit {code}, not 2: {(stdout + stderr)[-400:]!r}"
    if "Traceback" in stdout + stderr:
        return f"a traceback: {stderr[-400:]!r}"
    if len(errors) != 1 or lines[-1] != errors[0]:
        return f"not one Error: line, last: {stderr[-400:]!r}"
    if any(not line.startswith(("Usage: ", "Try ", "Error: ")) for line in lines):
        return f"more than usage and the Error: line: {stderr[-400:]!r}"
    if not any(name in errors[0] for name in case.fields) or len(errors[0]) < 30:
        return f"the Error line names none of {case.fields}, or no reason: {errors[0]!r}"
    if stdout:
        return f"printed a result: {stdout[:200]!r}"
    return None


def _cli_target(case: Case) -> str:
    args = case.args
    if "--event-file" in args and "--event" in args:
        return "trigger --event and --event-file"
    if "--event-file" in args:
        return "trigger --event-file"
    if "--game-date" in args and case.fields == ("'--game-date'",):
        return "trigger --game-date"
    return "trigger --event"


def _args(case: Case, event_file: Path) -> list[str]:
    if case.event_file is None:
        return list(case.args)
    event_file.write_bytes(case.event_file)
    return [*case.args, str(event_file)]


@pytest.fixture
def settings_reads(monkeypatch) -> Iterator[list[str]]:
    """Every time the CLI reads its settings (a refused input reads none)."""
    reads: list[str] = []
    real: Callable = cli_module._settings

    def noted():
        reads.append("settings")
        return real()

    monkeypatch.setattr(cli_module, "_settings", noted)
    yield reads


def test_cli_refuses_every_malformed_event(template, tmp_path, tally, settings_reads):
    started = time.monotonic()
    settings = copy_of(template, tmp_path)
    unchanged = Unchanged(settings)
    env = _cli_env(settings)
    runner = CliRunner()
    rng, ctx = _rng("cli"), Context(today=today_pacific(), margin=2)
    event_file = tmp_path / "event.json"
    problems: list[str] = []
    window: list[tuple[int, Case]] = []
    by_target: Counter = Counter()
    for index in range(_share("cli") - SUBPROCESSES):
        case = cli_case(rng, ctx)
        result = runner.invoke(cli, _args(case, event_file), input=case.stdin, env=env)
        problem = _refusal_problem(case, result.exit_code, result.stdout, result.stderr)
        if problem is None and settings_reads:
            problem = "a refused input read the settings (a dispatch began)"
        if problem:
            problems.append(_replay(index, case, problem))
            if len(problems) >= SHOWN:
                break
        settings_reads.clear()
        by_target[_cli_target(case)] += 1
        window.append((index, case))
        if len(window) >= CHECK_EVERY:
            assert not problems, "\n".join(problems)
            unchanged.check(window)
    assert not problems, "\n".join(problems)
    unchanged.check(window)
    in_process = sum(by_target.values())

    # The installed CLI, as an operator runs it: on a warehouse that must not appear.
    absent = tmp_path / "absent" / "warehouse.duckdb"
    real_env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    real_env.update(_cli_env(settings), DISPATCHER_DUCKDB_PATH=str(absent),
                    DISPATCHER_DBT_TARGET_PATH=str(absent.parent / "target"))  # fmt: skip
    cases: list[Case] = []
    while len(cases) < SUBPROCESSES:
        case = cli_case(rng, ctx)
        if all(
            "\x00" not in a and a.encode("utf-8", "replace").decode() == a for a in case.args
        ):  # an argv holds neither NUL nor a lone surrogate
            cases.append(case)

    def run(numbered: tuple[int, Case]) -> str | None:
        index, case = numbered
        work = tmp_path / f"cwd-{index}"
        work.mkdir()
        out = subprocess.run([str(DISPATCHER), *_args(case, tmp_path / f"event-{index}.json")],
                             input=case.stdin, env=real_env, cwd=work, capture_output=True,
                             timeout=60)  # fmt: skip
        problem = _refusal_problem(case, out.returncode, out.stdout.decode(errors="replace"),
                                   out.stderr.decode(errors="replace"))  # fmt: skip
        if problem is None and list(work.iterdir()):
            problem = f"wrote into its working directory: {list(work.iterdir())}"
        return _replay(index, case, problem) if problem else None

    with ThreadPoolExecutor(4) as pool:
        problems = [p for p in pool.map(run, enumerate(cases, start=10**6)) if p]
    assert not problems, "\n".join(problems)
    assert not absent.parent.exists()
    for case in cases:
        by_target[_cli_target(case)] += 1

    # A valid event still dispatches every pending player, once.
    pending = pending_players(settings)
    before = footprint(settings)
    result = runner.invoke(cli, ["trigger", "--event", json.dumps(SQL_LOOKING_EVENT), "--json"],
                           env=env)  # fmt: skip
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert (answer["outcome"], answer["requests_published"]) == ("dispatched", pending)
    _assert_one_dispatch(before, footprint(settings), pending)
    tally["cli"] = {"by_target": by_target, "answered": {"exit 2": sum(by_target.values())},
                    "by_path": {"CliRunner": in_process, "subprocess": len(cases)},
                    "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


# -- inputs the fuzz found faulting, kept as plain cases ------------------------------------------


def _client(tmp_path):
    """An app on a warehouse file that does not exist: a refusal must not need one."""
    settings = Settings(duckdb_path=tmp_path / "absent.duckdb", dbt_target_path=tmp_path / "t")
    return create_app(settings, push=ServeSettings(), now=lambda: NOW).test_client()


def _data(raw: bytes) -> dict:
    return {"message": {"data": base64.b64encode(raw).decode(), "messageId": "m-1"}}


def test_deeply_nested_json_is_400_not_a_fault(tmp_path):
    """json.loads raises RecursionError (not ValueError) past about 1,000 levels."""
    client = _client(tmp_path)
    for route in ("/trigger", *SCHEDULER_ROUTES):
        for body in (b"[" * 50_000, b'{"game_date": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"):
            response = client.post(route, data=body, content_type="application/json")
            assert (response.status_code, response.json["field"]) == (400, "body"), route
    event = b'{"game_date": "2026-11-28", "run_id": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    response = client.post("/trigger", json=_data(event))
    assert response.status_code == 400, response.json
    assert response.json["field"] == "message.data"
    assert "not valid JSON" in response.json["error"]
    assert not (tmp_path / "absent.duckdb").exists()


def test_deeply_nested_event_on_the_cli_is_exit_2(tmp_path):
    env = {"DISPATCHER_DUCKDB_PATH": str(tmp_path / "absent.duckdb")}
    runner = CliRunner()
    for args, stdin in ((["trigger", "--event", "[" * 5_000], None),
                        (["trigger", "--event-file", "-"], b'{"a":' * 5_000)):  # fmt: skip
        result = runner.invoke(cli, args, input=stdin, env=env)
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert result.exit_code == 2, result.output
        assert len(errors) == 1 and "not valid JSON" in errors[0], result.output
    assert not (tmp_path / "absent.duckdb").exists()


def test_a_body_over_the_limit_is_413_naming_the_body(tmp_path):
    client = _client(tmp_path)
    for route in ("/trigger", *SCHEDULER_ROUTES):
        response = client.post(route, data=b"{" + b" " * MAX_BODY_BYTES + b"}")
        assert response.status_code == 413
        assert response.json["field"] == "body" and "larger than" in response.json["error"]


def test_a_schedule_time_out_of_range_in_utc_is_400(tmp_path):
    """0001-01-01T00:00+01:00 parses, but is before year 1 in UTC (OverflowError)."""
    client = _client(tmp_path)
    for value in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        response = client.post("/start", data=json.dumps({"game_date": "2026-11-28"}),
                               headers={SCHEDULE_TIME_HEADER: value})  # fmt: skip
        assert response.status_code == 400, response.json
        assert response.json["field"] == SCHEDULE_TIME_HEADER
    assert not (tmp_path / "absent.duckdb").exists()


def test_an_unknown_key_with_a_line_break_is_refused_on_one_line(tmp_path):
    client = _client(tmp_path)
    for route in SCHEDULER_ROUTES:
        response = client.post(route, data=json.dumps({"game_date": "2026-11-28", "a\nb": 1}))
        assert response.status_code == 400
        assert response.json["field"] == "a\nb"
        assert response.json["error"] == "unknown field 'a\\nb': only game_date is read"


def test_a_chunked_body_over_the_limit_is_413_not_cut_at_the_limit(tmp_path):
    """Without a Content-Length (chunked), werkzeug's stream stops at the limit: what it
    read was a valid body followed by padding, and was dispatched."""
    client = _client(tmp_path)
    padded = b'{"game_date": "2026-11-28"}' + b" " * (2 * MAX_BODY_BYTES)
    for route in ("/trigger", *SCHEDULER_ROUTES):
        # gunicorn reads chunked bodies itself and says so (wsgi.input_terminated).
        response = client.post(route, input_stream=io.BytesIO(padded),
                               headers={"Transfer-Encoding": "chunked"},
                               environ_overrides={"wsgi.input_terminated": True})  # fmt: skip
        assert response.status_code == 413, response.json
        assert response.json["field"] == "body"
    small = client.post("/retry", input_stream=io.BytesIO(b'{"game_date": "2026-13-01"}'),
                        headers={"Transfer-Encoding": "chunked"},
                        environ_overrides={"wsgi.input_terminated": True})  # fmt: skip
    assert (small.status_code, small.json["field"]) == (400, "game_date")
    assert not (tmp_path / "absent.duckdb").exists()
