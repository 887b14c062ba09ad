"""Every value from input reaches the warehouse only as a query parameter.

Dynamic: every command and route that takes input runs with sentinel dates and
strings while a spy sees each statement DuckDB is sent in this process (the
connections themselves are wrapped, below the warehouse classes); no statement's text
may hold a sentinel or any date literal, every game_date comparison is against a
placeholder, and the sentinel date is among some statement's parameters. The same on
the BigQuery warehouse through a recording client. Static: every f-string, .format()
and % that builds SQL in dispatcher/ and alerts/ interpolates only module constants,
or a site listed below with the reason it is safe.
"""

from __future__ import annotations

import ast
import base64
import datetime as dt
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from reliability import record
from servers import free_port
from warehouses import build_template, copy_of

import alerts
import dispatcher
from dispatcher.cli import cli
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher
from dispatcher.sandbox.slate import SlateSpec
from dispatcher.serve import SCHEDULE_TIME_HEADER, ServeSettings, create_app
from dispatcher.transport import OutgoingMessage, PublishResult

DAY = dt.date(2026, 11, 13)  # the sentinel date: a slate, players pending
FIRST = dt.date(2026, 11, 11)  # a backfill's first date (no slate)
SPEC = SlateSpec(game_date=DAY, share_predicted=0.2, share_in_flight=0.1, seed=13)
SCHEDULE_TIME = "2026-11-13T13:57:31.000Z"
#: Strings that enter through options, events, envelopes, headers and requests.
RUN_ID = "SENTINEL-run-'; drop table nba_orchestration.request_ledger; --"
PROCESSOR = 'SENTINEL-proc-" or ""="'
MESSAGE_ID = "SENTINEL-msg-' or '1'='1"
SUBSCRIPTION = "projects/p/subscriptions/SENTINEL-sub"
JOB_NAME = "SENTINEL-job-$1"
ATTRIBUTE = "SENTINEL-attr-@game_date"
PLAYER = "SENTINEL-player'); delete from nba_predictions.player_prop_predictions; --"
GAME_ID = "SENTINEL-game-'||'"
REQUEST_ID = "SENTINEL-request-?"
OUT = "SENTINEL-out.html"
STRINGS = (RUN_ID, PROCESSOR, MESSAGE_ID, SUBSCRIPTION, JOB_NAME, ATTRIBUTE, PLAYER, GAME_ID,
           REQUEST_ID, OUT, "SENTINEL")  # fmt: skip


def date_forms(day: dt.date) -> tuple[str, ...]:
    """How a date would look had it been formatted into the text."""
    return (day.isoformat(), day.strftime("%Y%m%d"), day.strftime("%Y/%m/%d"),
            day.strftime("%m/%d/%Y"), day.strftime("%d.%m.%Y"))  # fmt: skip


FORBIDDEN = (*STRINGS, *date_forms(DAY), *date_forms(FIRST),
             *date_forms(FIRST + dt.timedelta(days=1)), "13:57:31")  # fmt: skip
#: A date literal, anywhere in a statement's text.
DATE_LITERAL = re.compile(r"\d{4}-\d{2}-\d{2}")
#: game_date compared with a literal rather than a placeholder, a column or a subquery.
LITERAL_COMPARISON = re.compile(
    r"game_date\s*(?:=|<>|!=|<=|>=|<|>|\bbetween\b|\bin\b)\s*(?:'|\"|\d|date\s*'|timestamp\s*')",
    re.IGNORECASE,
)


# -- the spy: every statement of every DuckDB connection in this process ----------------------


class Statements:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def since(self, mark: int) -> list[tuple[str, Any]]:
        return self.seen[mark:]


class SpiedConnection:
    """A DuckDB connection whose statements are noted before they run."""

    def __init__(self, real: Any, statements: Statements) -> None:
        self._real = real
        self._statements = statements

    def execute(self, query: str, parameters: Any = None):
        self._statements.seen.append((str(query), parameters))
        if parameters is None:
            return self._real.execute(query)
        return self._real.execute(query, parameters)

    def executemany(self, query: str, parameters: Any = None):
        self._statements.seen.append((str(query), parameters))
        return self._real.executemany(query, parameters)

    def sql(self, query: str, *args: Any, **kwargs: Any):
        self._statements.seen.append((str(query), kwargs.get("params", args[:1] or None)))
        return self._real.sql(query, *args, **kwargs)

    query = sql

    def cursor(self) -> SpiedConnection:
        return SpiedConnection(self._real.cursor(), self._statements)

    def __enter__(self) -> SpiedConnection:
        self._real.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._real.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def statements(monkeypatch) -> Iterator[Statements]:
    import duckdb

    from dispatcher import warehouse_duckdb

    assert not warehouse_duckdb._files._open, "a DuckDB file is open from before the spy"
    seen = Statements()
    real_connect = duckdb.connect
    monkeypatch.setattr(duckdb, "connect",
                        lambda *a, **k: SpiedConnection(real_connect(*a, **k), seen))  # fmt: skip
    yield seen


def values_of(parameters: Any) -> Iterator[Any]:
    """Every value a statement was given, lists flattened."""
    items = parameters.values() if isinstance(parameters, Mapping) else parameters or ()
    for value in items:
        if isinstance(value, list | tuple):
            yield from values_of(value)
        else:
            yield value


def problems_of(sql: str) -> list[str]:
    found = [f"holds {word!r}" for word in FORBIDDEN if word in sql]
    literal = DATE_LITERAL.search(sql)
    if literal:
        found.append(f"holds a date literal {literal.group()!r}")
    if LITERAL_COMPARISON.search(sql):
        found.append("compares game_date with a literal")
    return found


# -- the commands and routes that take input -------------------------------------------------


@pytest.fixture(scope="module")
def tally():
    """Each part's figures, recorded once all three held."""
    parts: dict[str, dict] = {}
    yield parts
    if set(parts) == {"duckdb", "bigquery", "static"}:
        duckdb, bigquery = parts["duckdb"], parts["bigquery"]
        record("injection", statements_checked=duckdb["statements"] + bigquery["statements"],
               by_warehouse={"duckdb": duckdb["statements"], "bigquery": bigquery["statements"]},
               commands=len(duckdb["commands"]), commands_run=duckdb["commands"],
               bigquery_calls=bigquery["commands"], static_sites_checked=parts["static"]["sites"],
               static_sites_allowed=parts["static"]["allowed"],
               seconds=duckdb["seconds"])  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(tmp_path_factory.mktemp("injection"), [SPEC], tests=False)


#: dbt's data and unit tests left out: other suites run them; the models are the same.
def _env(settings: Settings) -> dict[str, str]:
    return {"DISPATCHER_WAREHOUSE": "duckdb", "DISPATCHER_TRANSPORT": "local",
            "DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path),
            "DISPATCHER_DBT_TARGET_PATH": str(settings.dbt_target_path),
            "DISPATCHER_LOG_FORMAT": "json"}  # fmt: skip


def _event() -> str:
    return json.dumps({"event_type": "phase4_complete", "processor": PROCESSOR,
                       "game_date": DAY.isoformat(), "players_processed": 400,
                       "players_ready": 350, "players_failed": 50,
                       "timestamp": "2026-11-13T08:31:00Z", "run_id": RUN_ID})  # fmt: skip


def _requests_with_sentinels(settings: Settings) -> None:
    """Two prediction requests in the outbox, as a Phase 5 worker receives them: a
    published one whose game_id and request_id are sentinels, one for a sentinel player."""
    from dispatcher.transport_local import LocalOutboxTransport
    from dispatcher.warehouse import connect

    wh = connect(settings)
    try:
        sample = wh.query(
            "select data, attributes from nba_orchestration.request_outbox"
            " where game_date = @game_date order by published_at limit 1",
            {"game_date": DAY},
        )[0]
        body, attributes = json.loads(sample["data"]), json.loads(sample["attributes"])
        forged = [{**body, "game_id": GAME_ID, "request_id": REQUEST_ID},
                  {**body, "player_lookup": PLAYER, "request_id": REQUEST_ID + "2"}]  # fmt: skip
        results = LocalOutboxTransport(wh.outbox()).publish("prediction-request", [
            OutgoingMessage(item["request_id"], json.dumps(item).encode(),
                            {**attributes, "player_lookup": item["player_lookup"],
                             "request_id": item["request_id"]})
            for item in forged
        ])  # fmt: skip
        assert all(r.ok for r in results), results
    finally:
        wh.close()


def test_every_input_reaches_duckdb_only_as_a_parameter(template, tmp_path, statements, tally):
    started = time.monotonic()
    settings = copy_of(template, tmp_path)
    env = _env(settings)
    runner = CliRunner()
    day = DAY.isoformat()

    def invoke(*args: str, ok: tuple[int, ...] = (0, 3, 4, 5), extra: dict | None = None):
        def run() -> None:
            result = runner.invoke(cli, list(args), env={**env, **(extra or {})})
            assert result.exit_code in ok, (args, result.output[-800:])

        return run

    app = create_app(settings, push=ServeSettings())
    client = app.test_client()

    def post(route: str, body: dict, headers: dict | None = None) -> Callable[[], None]:
        def run() -> None:
            response = client.post(route, json=body, headers=headers or {})
            assert response.status_code in (200, 503), (route, response.json)

        return run

    push = {"message": {"data": base64.b64encode(_event().encode()).decode(),
                        "attributes": {"source": ATTRIBUTE}, "messageId": MESSAGE_ID,
                        "message_id": MESSAGE_ID, "publishTime": SCHEDULE_TIME},
            "subscription": SUBSCRIPTION}  # fmt: skip
    scheduler = {"X-CloudScheduler": "true", "X-CloudScheduler-JobName": JOB_NAME,
                 SCHEDULE_TIME_HEADER: SCHEDULE_TIME}  # fmt: skip
    # Pub/Sub where nobody listens: announce reads the readiness mart, then fails to send.
    announce_env = {"DISPATCHER_GCP_PROJECT": "sentinel-project",
                    "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{free_port()}"}  # fmt: skip
    # (name, what it runs, the input values that must reach the warehouse as parameters)
    # fmt: off
    commands: list[tuple[str, Callable[[], None], tuple[Any, ...]]] = [
        ("trigger --event", invoke("trigger", "--event", _event(), "--json"), (DAY,)),
        ("trigger --game-date",
         invoke("trigger", "--game-date", day, "--trigger-source", "scheduler"), (DAY,)),
        ("start --game-date",
         invoke("start", "--game-date", day, "--wait-minutes", "0", "--json"), (DAY,)),
        ("start --force", invoke("start", "--game-date", day, "--force"), (DAY,)),
        ("retry --game-date", invoke("retry", "--game-date", day), (DAY,)),
        ("status --game-date", invoke("status", "--game-date", day, "--json"), (DAY,)),
        ("plan --game-date", invoke("plan", "--game-date", day, "--json"), (DAY,)),
        ("plan --force", invoke("plan", "--game-date", day, "--force"), (DAY,)),
        ("backfill --start --end",
         invoke("backfill", "--start", FIRST.isoformat(), "--end", day), (FIRST, DAY)),
        ("POST /trigger", post("/trigger", push), (DAY,)),
        ("POST /start", post("/start", {"game_date": day}, scheduler), (DAY,)),
        ("POST /retry", post("/retry", {"game_date": day}, scheduler), (DAY,)),
        ("POST /status", post("/status", {"game_date": day}, scheduler), (DAY,)),
        ("announce --game-date --run-id",
         invoke("announce", "--game-date", day, "--run-id", RUN_ID, "--timeout", "1",
                ok=(0, 1), extra=announce_env), (DAY,)),
        ("worker (requests carrying sentinels)", lambda: (
            _requests_with_sentinels(settings),
            invoke("worker", "--max-messages", "1000", "--idle-exit-seconds", "0.5")(),
        ), (PLAYER, GAME_ID)),
        ("report --game-date --out",
         invoke("report", "--game-date", day, "--days", "3", "--out", str(tmp_path / OUT)),
         (DAY,)),
    ]
    # fmt: on
    problems: list[str] = []
    checked = 0
    for name, run, reaching in commands:
        mark = len(statements.seen)
        run()
        seen = statements.since(mark)
        assert seen, f"{name}: no statement seen: the spy is not on its connection"
        checked += len(seen)
        for sql, _parameters in seen:
            for problem in problems_of(sql):
                problems.append(f"{name}: a statement {problem}:\n{sql.strip()[:600]}")
        given = [value for _, parameters in seen for value in values_of(parameters)]
        for value in reaching:
            if value not in given and str(value) not in map(str, given):
                problems.append(f"{name}: {value!r} reached no statement as a parameter")
    assert not problems, "\n".join(problems)
    assert (tmp_path / OUT).exists()
    tally["duckdb"] = {"statements": checked, "commands": [name for name, _, _ in commands],
                       "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


# -- BigQuery: what the client is sent ----------------------------------------------------------


class RecordingClient:
    """google-cloud-bigquery's Client as far as the warehouse uses it: notes each query
    and its job config (every client's, in ``jobs``), answers no rows."""

    jobs: list[tuple[str, Any]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        return None

    def query(self, sql: str, job_config: Any = None, **kwargs: Any):
        RecordingClient.jobs.append((sql, job_config))
        return self

    def result(self, **kwargs: Any) -> list:
        return []

    def close(self) -> None:
        return None


class Acknowledging:
    kind = "fake"

    def publish(self, topic, messages, *, timeout):
        return [PublishResult(m.request_id, message_id=f"m-{m.request_id}") for m in messages]

    def close(self) -> None:
        return None


def _parameter_values(config: Any) -> list[Any]:
    values: list[Any] = []
    for parameter in getattr(config, "query_parameters", None) or []:
        value = getattr(parameter, "value", None)
        values.extend(parameter.values if hasattr(parameter, "values") else [value])
    return values


def test_every_input_reaches_bigquery_only_as_a_parameter(monkeypatch, tally):
    from google.cloud import bigquery

    from dispatcher.warehouse_bigquery import BigQueryWarehouse

    monkeypatch.setattr(bigquery, "Client", RecordingClient)
    monkeypatch.setattr(RecordingClient, "jobs", [])
    settings = Settings(warehouse="bigquery", gcp_project="sentinel-project", transport="pubsub")
    dispatcher_ = Dispatcher(settings, transport_factory=lambda wh: Acknowledging())
    now = dt.datetime(2026, 11, 13, 14, 0, tzinfo=dt.UTC)
    calls: list[tuple[str, Callable[[], Any], tuple[Any, ...]]] = [
        ("trigger", lambda: dispatcher_.trigger(DAY, trigger_source="pubsub"), (DAY,)),
        ("retry", lambda: dispatcher_.retry(DAY), (DAY,)),
        ("start", lambda: dispatcher_.start(DAY, wait_minutes=0, force=True), (DAY,)),
        ("start_check", lambda: dispatcher_.start_check(DAY, scheduled_at=now, now=now), (DAY,)),
        ("status", lambda: dispatcher_.status(DAY), (DAY,)),
        ("plan", lambda: dispatcher_.plan(DAY), (DAY,)),
        ("backfill", lambda: dispatcher_.backfill(FIRST, DAY), (FIRST, DAY)),
    ]
    warehouse = BigQueryWarehouse(project="sentinel-project")
    claimed_at = dt.datetime(2026, 11, 13, 13, 57, 31)
    row = {"prediction_id": REQUEST_ID, "system_id": "moving_average",
           "player_lookup": PLAYER, "game_id": GAME_ID, "game_date": DAY,
           "predicted_points": 20.5, "confidence_score": 0.7, "recommendation": "OVER",
           "current_points_line": 19.5}  # fmt: skip
    # fmt: off
    calls += [
        ("claim", lambda: warehouse.claim(FIRST, DAY, batch_id=RUN_ID, trigger_source="manual",
                                          claimed_at=claimed_at, force=True,
                                          unless_critical=True), (DAY, RUN_ID)),
        ("confirm", lambda: warehouse.confirm(DAY, DAY, batch_id=RUN_ID,
                                              acknowledged=[(REQUEST_ID, MESSAGE_ID)],
                                              published_at=claimed_at), (REQUEST_ID,)),
        ("release", lambda: warehouse.release(DAY, DAY, batch_id=RUN_ID), (RUN_ID,)),
        ("upsert_predictions", lambda: warehouse.upsert_predictions([row], created_at=claimed_at),
         (PLAYER, GAME_ID, DAY)),
    ]
    # fmt: on
    problems: list[str] = []
    checked = 0
    for name, call, reaching in calls:
        mark = len(RecordingClient.jobs)
        call()
        jobs = RecordingClient.jobs[mark:]
        assert jobs, f"{name}: no query sent"
        checked += len(jobs)
        for sql, _config in jobs:
            for problem in problems_of(sql):
                problems.append(f"{name}: a statement {problem}:\n{sql.strip()[:600]}")
        given = [v for _, config in jobs for v in _parameter_values(config)]
        for value in reaching:
            if value not in given:
                problems.append(f"{name}: {value!r} reached no query as a parameter")
    assert not problems, "\n".join(problems)
    tally["bigquery"] = {"statements": checked, "commands": [name for name, _, _ in calls]}


# -- static: how SQL is built in dispatcher/ and alerts/ -----------------------------------------

PACKAGES = (Path(dispatcher.__file__).parent, Path(alerts.__file__).parent)
#: Text that makes a string SQL: a statement's shape, or a filter on game_date.
SQL_SHAPE = re.compile(
    r"\bselect\b[\s\S]*\bfrom\b|\binsert\s+(or\s+replace\s+)?into\b|\bupdate\b[\s\S]*\bset\b"
    r"|\bdelete\s+from\b|\bmerge\s+into\b|\bcreate\s+(or\s+replace\s+)?(temp\s+)?"
    r"(table|schema|view)\b|\bdrop\s+(table|schema|view)\b|\balter\s+table\b"
    r"|\bwhere\b[\s\S]*\bgame_date\b|\band\s+game_date\s+in\b",
    re.IGNORECASE,
)
#: Interpolations that are not module constants, each with why no input can reach it.
#: Keyed (file under the package's parent, enclosing function, the interpolated expression).
ALLOWED: dict[tuple[str, str, str], str] = {
    ("dispatcher/dispatch.py", "_record", "columns"):
        "the run-log row's own keys, literals of _record",
    ("dispatcher/dispatch.py", "_record", "values"):
        "an @placeholder per key of the run-log row: the values are bound",
    ("alerts/__init__.py", "_record", "', '.join(columns)"):
        "the keys of alert rows built in alerts/ (literals), not input",
    ("alerts/__init__.py", "_record", "', '.join(values)"):
        "@placeholders numbered per row: the values are bound",
    ("dispatcher/marts.py", "_one", "table"):
        "every caller passes a mart constant (READINESS, COVERAGE, LATENCY)",
    ("dispatcher/marts.py", "_players", "table"):
        "every caller passes a mart constant (DISPATCH_STATE, PENDING)",
    ("dispatcher/sandbox/demo.py", "claim_warehouse", "schema"):
        "the schema part of the MARKER constant",
    ("dispatcher/sandbox/demo.py", "_foreign_data", "relation"):
        "a table name DuckDB's information_schema listed, double-quoted",
    ("dispatcher/sandbox/demo.py", "_foreign_data", "others"):
        "a fixed filter on the MARKER constant, or empty",
    ("dispatcher/sandbox/load.py", "_write_duckdb", "schema"):
        "a schema of the sandbox's own table definitions (sandbox/tables.py)",
    ("dispatcher/sandbox/load.py", "_write_duckdb", "table.schema"):
        "the sandbox's own table definitions (sandbox/tables.py)",
    ("dispatcher/sandbox/load.py", "_write_duckdb", "table.name"):
        "the sandbox's own table definitions (sandbox/tables.py)",
    ("dispatcher/sandbox/load.py", "_write_duckdb", "columns"):
        "the column names of the sandbox's own table definitions",
    ("dispatcher/sandbox/load.py", "_write_duckdb", "types"):
        "the column types of the sandbox's own table definitions",
    ("dispatcher/sandbox/load.py", "write_bigquery", "project"):
        "the configured GCP project (settings, not request input), as a `quoted` name",
    ("dispatcher/sandbox/load.py", "write_bigquery", "schema"):
        "a schema of the sandbox's own table definitions (sandbox/tables.py)",
    ("dispatcher/sandbox/load.py", "write_bigquery", "table.schema"):
        "the sandbox's own table definitions (sandbox/tables.py)",
    ("dispatcher/sandbox/load.py", "write_bigquery", "table.name"):
        "the sandbox's own table definitions (sandbox/tables.py)",
    ("dispatcher/sandbox/tables.py", "duckdb_ddl", "self.schema"):
        "a table definition of the sandbox (literals in tables.py)",
    ("dispatcher/sandbox/tables.py", "duckdb_ddl", "self.name"):
        "a table definition of the sandbox (literals in tables.py)",
    ("dispatcher/sandbox/tables.py", "duckdb_ddl", "body"):
        "the column list of a sandbox table definition",
    ("dispatcher/sandbox/tables.py", "bigquery_ddl", "project"):
        "the configured GCP project (settings, not request input)",
    ("dispatcher/sandbox/tables.py", "bigquery_ddl", "self.schema"):
        "a table definition of the sandbox (literals in tables.py)",
    ("dispatcher/sandbox/tables.py", "bigquery_ddl", "self.name"):
        "a table definition of the sandbox (literals in tables.py)",
    ("dispatcher/sandbox/tables.py", "bigquery_ddl", "body"):
        "the column list of a sandbox table definition",
}  # fmt: skip


class Module:
    """One source file: its constants, and the SQL it builds by interpolation."""

    def __init__(self, path: Path, root: Path) -> None:
        self.name = path.relative_to(root).as_posix()
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.constants: dict[str, str] = {}
        for node in self.tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AnnAssign) and node.value else []
            )  # fmt: skip
            for target in targets:
                if isinstance(target, ast.Name) and target.id.lstrip("_").isupper():
                    self.constants[target.id] = _literal_text(node.value)  # type: ignore[arg-type]
        for node in self.tree.body:  # constants imported from the packages themselves
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(
                    ".")[0] in {"dispatcher", "alerts"}):  # fmt: skip
                for alias in node.names:
                    if alias.name.isupper():
                        self.constants.setdefault(alias.asname or alias.name, "")

    def sites(self) -> Iterator[tuple[int, str, str, list[ast.expr]]]:
        """(line, enclosing function, literal text, interpolated expressions) of every
        f-string, .format() and % whose text looks like SQL."""
        for function, node in _walk(self.tree, "<module>"):
            if isinstance(node, ast.JoinedStr):
                text = _literal_text(node)
                exprs = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "format"):  # fmt: skip
                text = self._text(node.func.value)
                exprs = [*node.args, *(k.value for k in node.keywords)]
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
                text = self._text(node.left)
                exprs = list(node.right.elts) if isinstance(node.right, ast.Tuple) else [node.right]
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
                text = self._text(node.left) + " " + self._text(node.right)
                exprs = [side for side in (node.left, node.right) if not self._text(side)]
            else:
                continue
            if exprs and SQL_SHAPE.search(text):
                yield node.lineno, function, text, exprs

    def _text(self, node: ast.expr) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return self.constants.get(node.id, "")
        if isinstance(node, ast.JoinedStr | ast.BinOp):
            return _literal_text(node)
        return ""

    def safe(self, node: ast.expr) -> bool:
        """A constant, a module constant (here or imported from the packages), a join of
        constants, or a choice between safe values."""
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.Name):
            return node.id in self.constants
        if isinstance(node, ast.Attribute):  # marts.COVERAGE
            return node.attr.isupper() and isinstance(node.value, ast.Name)
        if isinstance(node, ast.IfExp):
            return self.safe(node.body) and self.safe(node.orelse)
        if isinstance(node, ast.JoinedStr):
            return all(self.safe(v.value) for v in node.values if isinstance(v, ast.FormattedValue))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "join"
            and isinstance(node.func.value, ast.Constant)
        ):
            return len(node.args) == 1 and self.safe(node.args[0])  # fmt: skip
        return False


def _literal_text(node: ast.expr) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values
                       if isinstance(v, ast.Constant) and isinstance(v.value, str))  # fmt: skip
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal_text(node.left) + _literal_text(node.right)
    return ""


def _walk(node: ast.AST, function: str) -> Iterator[tuple[str, ast.AST]]:
    for child in ast.iter_child_nodes(node):
        name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
        yield name, child
        yield from _walk(child, name)


def sql_sites() -> list[tuple[str, int, str, str, bool]]:
    """(file, line, function, expression, safe) of every interpolation into SQL text."""
    found = []
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            module = Module(path, package.parent)
            for line, function, _text, exprs in module.sites():
                for expr in exprs:
                    found.append((module.name, line, function, ast.unparse(expr),
                                  module.safe(expr)))  # fmt: skip
    return found


def test_sql_is_formatted_only_from_constants_or_listed_sites(tally):
    sites = sql_sites()
    unsafe = {(name, function, expr): line for name, line, function, expr, safe in sites
              if not safe}  # fmt: skip
    unlisted = [f"{name}:{line} in {function}(): {expr!r} is formatted into SQL"
                for (name, function, expr), line in sorted(unsafe.items(), key=str)
                if (name, function, expr) not in ALLOWED]  # fmt: skip
    assert not unlisted, (
        "SQL built by formatting something other than a module constant (bind it as a"
        " parameter, or list it in ALLOWED with why no input reaches it):\n" + "\n".join(unlisted)
    )
    stale = sorted(key for key in ALLOWED if key not in unsafe)
    assert not stale, f"ALLOWED lists sites that no longer exist: {stale}"
    assert len(sites) > 40  # the scan finds the SQL the packages build
    tally["static"] = {"sites": len(sites), "allowed": len(ALLOWED)}
