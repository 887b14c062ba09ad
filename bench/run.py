"""Benchmark the dispatcher against the issue's goals and print a markdown table.

Run from the repository root, either way:

    /tmp/venv/bin/python -m bench.run [--quick] [--rows 1,3] [--profile]
    /tmp/venv/bin/python bench/run.py  [--quick] [--rows 1,3] [--profile]

It starts its own Pub/Sub emulator on 127.0.0.1 (stopped by PID at the end, also on
error or Ctrl-C), builds DuckDB warehouses in a temporary directory (sample slates +
``dbt build``), measures each row against a baseline taken in the same run, and prints
the machine, the table, then per-stage breakdowns. Progress goes to stderr; the report
to stdout. See bench/README.md for what each row means.

Importing this module is cheap (standard library only): the heavy imports happen inside
the functions that need them, so tests/test_bench_smoke.py can import it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # `python bench/run.py`: make `dispatcher` / `bench` importable
    sys.path.insert(0, str(ROOT))

PROJECT = "bench-project"
REQUEST_TOPIC = "prediction-request"  # dispatcher.transport.REQUEST_TOPIC (checked at run time)

#: Row 1 / 2: one game date with 450 pending players (510 on the slate; 60 not expected).
GAME_DATE = dt.date(2026, 3, 15)
#: Row 3: a 100-date backfill, 450 pending players each.
BACKFILL_START = dt.date(2025, 10, 21)
BACKFILL_DATES = 100
PLAYERS_PENDING = 450

#: Row 6: five seasons of history before GAME_DATE, 169 game dates each (845 dates),
#: 450 players per date, every one fully predicted by the five systems.
HISTORY_SEASON_STARTS = tuple(dt.date(year, 10, 20) for year in range(2020, 2025))
HISTORY_SEASON_DATES = 169
HISTORY_TEAMS, HISTORY_PLAYERS_PER_TEAM = 30, 15
#: Row 6 writes fewer seasons when the history would take longer than this to generate.
HISTORY_BUDGET_SECONDS = 300.0
#: Row 6's reads must stay within this multiple of the same read on a one-day warehouse.
HISTORY_GOAL_RATIO = 2.0

ROWS = {
    1: "trigger-450",
    2: "cli-trigger",
    3: "backfill-45000",
    4: "cli-help",
    5: "cli-plan",
    6: "history-reads",
    7: "backfill-rss",
}
#: Measured runs per row (the baseline gets as many, interleaved).
RUNS_FULL = {1: 5, 2: 5, 3: 3, 4: 15, 5: 7, 6: 9, 7: 3}
RUNS_QUICK = {1: 2, 2: 3, 3: 1, 4: 5, 5: 3, 6: 5, 7: 1}
#: Row 3 stops repeating once another pass would take it past this many seconds.
ROW3_BUDGET_SECONDS = 900.0
#: Row 7: a child process that runs longer than this is killed (and the bench fails).
ROW7_TIMEOUT_SECONDS = 900.0

# The old coordinator: default PublisherClient, publish, then wait on each future.
# Batched: what the issue names as "raw" publishing.
RAW_BATCH_MAX_MESSAGES = 1000
RAW_BATCH_MAX_LATENCY = 0.05
FUTURE_TIMEOUT = 120.0


class BenchError(RuntimeError):
    """Something the benchmark relies on did not hold (a count, an exit code, a server)."""


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- arguments --------------------------------------------------------------------------


def parse_rows(text: str) -> list[int]:
    """'1,3' / '1 3' / 'trigger-450,cli-help' / 'all' -> sorted row numbers."""
    if text.strip().lower() == "all":
        return sorted(ROWS)
    by_name = {name: number for number, name in ROWS.items()}
    rows: set[int] = set()
    for token in text.replace(",", " ").split():
        token = token.strip().lower()
        if token.isdigit() and int(token) in ROWS:
            rows.add(int(token))
        elif token in by_name:
            rows.add(by_name[token])
        else:
            choices = ", ".join(f"{n} ({name})" for n, name in ROWS.items())
            raise argparse.ArgumentTypeError(f"unknown row {token!r}; choose from {choices}")
    if not rows:
        raise argparse.ArgumentTypeError("no rows given")
    return sorted(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark the Phase 4 -> 5 dispatcher against the issue's goals.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"fewer repetitions ({_runs_text(RUNS_QUICK)}) instead of {_runs_text(RUNS_FULL)}",
    )
    parser.add_argument(
        "--rows",
        type=parse_rows,
        default=sorted(ROWS),
        metavar="ROWS",
        help="rows to run, e.g. '1,3' or 'trigger-450,cli-help' (default: all): "
        + ", ".join(f"{n}={name}" for n, name in ROWS.items()),
    )
    parser.add_argument(
        "--runs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="measured runs for every selected row (overrides --quick and the defaults)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile one dispatch (rows 1, 3) and -X importtime the CLI (rows 2, 4, 5)",
    )
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the temporary directory (warehouses, emulator and dispatcher logs)",
    )
    return parser


def _runs_text(runs: dict[int, int]) -> str:
    return ", ".join(f"row {row}: {n}" for row, n in runs.items())


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def runs_for(args: argparse.Namespace, row: int) -> int:
    if args.runs is not None:
        return args.runs
    return (RUNS_QUICK if args.quick else RUNS_FULL)[row]


# --- results and the table ----------------------------------------------------------------


@dataclass
class RowResult:
    row: int
    title: str
    measured: list[float]
    baseline: list[float]
    baseline_label: str
    #: "speedup": baseline / measured >= goal; "ratio": measured / baseline <= goal;
    #: "absolute": measured <= goal seconds.
    goal_kind: str
    goal: float
    notes: list[str] = field(default_factory=list)
    #: "s" (samples in seconds) or "MB" (samples in megabytes, e.g. a peak RSS).
    unit: str = "s"
    #: Shown instead of the row number when one row gives several lines (e.g. "6a").
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label or str(self.row)

    @property
    def measured_median(self) -> float:
        return statistics.median(self.measured)

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline)

    @property
    def ratio(self) -> float:
        if self.goal_kind == "speedup":
            return self.baseline_median / self.measured_median
        return self.measured_median / self.baseline_median

    @property
    def met(self) -> bool:
        if self.goal_kind == "speedup":
            return self.ratio >= self.goal
        if self.goal_kind == "ratio":
            return self.ratio <= self.goal
        return self.measured_median <= self.goal

    def goal_text(self) -> str:
        if self.goal_kind == "speedup":
            return f"≥ {self.goal:g}× faster"
        if self.goal_kind == "ratio":
            return f"≤ {self.goal:g}× baseline"
        return f"≤ {format_value(self.goal, self.unit)}"

    def ratio_text(self) -> str:
        if self.goal_kind == "speedup":
            return f"{self.ratio:.1f}× faster"
        return f"{self.ratio:.2f}×"


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def format_value(value: float, unit: str = "s") -> str:
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit != "s":
        raise ValueError(f"unknown unit {unit!r}")
    return format_seconds(value)


def render_table(results: Sequence[RowResult]) -> str:
    lines = [
        "| row | measured (median of N runs) | baseline (same run) | ratio | goal | met? |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name}. {r.title} "
            f"| {format_value(r.measured_median, r.unit)} (N={len(r.measured)}) "
            f"| {format_value(r.baseline_median, r.unit)} {r.baseline_label} "
            f"(N={len(r.baseline)}) "
            f"| {r.ratio_text()} | {r.goal_text()} | {'yes' if r.met else '**NO**'} |"
        )
    return "\n".join(lines)


def render_samples(results: Sequence[RowResult]) -> str:
    lines = []
    for r in results:
        measured = ", ".join(format_value(s, r.unit) for s in r.measured)
        baseline = ", ".join(format_value(s, r.unit) for s in r.baseline)
        lines.append(f"- row {r.name}: measured [{measured}]; baseline [{baseline}]")
        lines.extend(f"  - {note}" for note in r.notes)
    return "\n".join(lines)


# --- the machine --------------------------------------------------------------------------


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    from importlib import metadata

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    versions = []
    for package in ("duckdb", "google-cloud-pubsub", "dbt-core", "dbt-duckdb", "grpcio"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    return {
        "cpus": f"{os.cpu_count()} ({usable} usable by this process)",
        "cpu_model": cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}"
        f" ({sys.executable})",
        "os": platform.platform(),
        "libraries": ", ".join(versions),
    }


def render_machine(info: dict[str, str]) -> str:
    return "\n".join(
        [
            f"- CPUs: {info['cpus']}",
            f"- CPU model: {info['cpu_model']}",
            f"- Python: {info['python']}",
            f"- OS: {info['os']}",
            f"- Libraries: {info['libraries']}",
        ]
    )


# --- stage timers (wrappers around library calls; library code is not edited) -------------


@dataclass
class _Frame:
    name: str
    context: bool
    children: float = 0.0


def sql_label(sql: str) -> str:
    """Which dispatch step a statement belongs to (by what it touches)."""
    s = " ".join(sql.split()).lower()
    if "fct_phase4_readiness" in s:
        return "readiness read (fct_phase4_readiness)"
    if "fct_prediction_coverage" in s:
        return "coverage read (fct_prediction_coverage)"
    if s.startswith("insert into nba_orchestration.dispatch_locks"):
        return "claim: ensure lock row"
    if "dispatch_locks" in s or s.startswith("insert into nba_orchestration.request_ledger"):
        return "claim: lock + insert claims (txn)"
    if "request_ledger as ledger inner join" in s and "batch_id" in s:
        return "claim: read claimed rows (ledger ⋈ fct_pending_players)"
    if "from dispatch_claims" in s:
        return "claim: read claimed rows (dispatch_claims)"
    if "set published_at" in s:
        return "confirm (ledger update)"
    if s.startswith("delete from nba_orchestration.request_ledger"):
        return "release unconfirmed claims"
    if "dispatch_runs" in s:
        return "insert row"
    if "alert_log" in s:
        return "alert log"
    return "other SQL: " + s[:40]


class Stages:
    """Exclusive wall time per stage of each dispatch call.

    While installed, the dispatcher's own functions are wrapped with perf_counter timers
    (a few microseconds per call, ~15 calls per dispatch). A stage's time excludes the
    stages nested in it; the dispatch call's own remainder is reported as glue.
    """

    ROOT_LABEL = "glue: logging, result, context managers"

    def __init__(self) -> None:
        self.calls: list[dict[str, float]] = []
        self.totals: list[float] = []
        self._current: dict[str, float] | None = None
        self._stack: list[_Frame] = []
        self._undo: list[tuple[Any, str, Any]] = []

    def _wrap(
        self, owner: Any, attr: str, label: Any, *, context: bool = False, root: bool = False
    ) -> None:
        original = owner.__dict__[attr]
        stages = self

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            if root:
                if stages._current is not None:  # a root inside a root: not expected
                    return original(*args, **kwargs)
                stages._current, stages._stack = defaultdict(float), []
            elif stages._current is None:
                return original(*args, **kwargs)
            name = label(*args, **kwargs) if callable(label) else label
            prefix = next((f.name for f in reversed(stages._stack) if f.context), None)
            if prefix and not context:
                name = f"{prefix} › {name}"
            frame = _Frame(name, context)
            stages._stack.append(frame)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                stages._stack.pop()
                if stages._current is not None:
                    stages._current[name] += elapsed - frame.children
                    if stages._stack:
                        stages._stack[-1].children += elapsed
                if root and stages._current is not None:
                    stages.calls.append(dict(stages._current))
                    stages.totals.append(elapsed)
                    stages._current = None

        setattr(owner, attr, wrapper)
        self._undo.append((owner, attr, original))

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stages]:
        from dispatcher.dispatch import Dispatcher
        from dispatcher.transport_pubsub import PubSubTransport
        from dispatcher.warehouse import DuckDBWarehouse

        def sql_of(_self, sql, *_args, **_kwargs):
            return sql_label(sql)

        def statements_of(_self, statements, *_args, **_kwargs):
            return sql_label(" ".join(statements))

        try:
            self._wrap(Dispatcher, "trigger", self.ROOT_LABEL, root=True)
            self._wrap(Dispatcher, "retry", self.ROOT_LABEL, root=True)
            self._wrap(Dispatcher, "backfill", self.ROOT_LABEL, root=True)
            self._wrap(Dispatcher, "_record", "run-log write", context=True)
            self._wrap(Dispatcher, "_publish", "build messages, tally outcomes")
            self._wrap(Dispatcher, "_alert", "alerts")
            self._wrap(DuckDBWarehouse, "__init__", "open warehouse (duckdb.connect)")
            self._wrap(DuckDBWarehouse, "close", "close warehouse")
            self._wrap(DuckDBWarehouse, "query", sql_of)
            self._wrap(DuckDBWarehouse, "execute", sql_of)
            self._wrap(DuckDBWarehouse, "transaction", statements_of)
            self._wrap(PubSubTransport, "__init__", "transport: create PublisherClient")
            self._wrap(PubSubTransport, "publish", "transport: publish + await acks")
            self._wrap(PubSubTransport, "close", "transport: close (flush, channel)")
            yield self
        finally:
            for owner, attr, original in reversed(self._undo):
                setattr(owner, attr, original)
            self._undo.clear()

    def table(self, *, per: str = "call", edges: int = 0) -> str:
        """Mean exclusive ms per call for each stage; with edges, also the first and last
        `edges` calls (to show how a stage grows as the warehouse fills)."""
        if not self.calls:
            return "(no calls recorded)"
        names = sorted(
            {n for call in self.calls for n in call},
            key=lambda n: -sum(c.get(n, 0.0) for c in self.calls),
        )
        total = sum(self.totals)
        n = len(self.calls)

        def mean_ms(calls: list[dict[str, float]], name: str) -> float:
            return 1000 * sum(c.get(name, 0.0) for c in calls) / len(calls)

        header = f"| stage | mean ms/{per}"
        rule = "|---|---:"
        if edges and n >= 2 * edges:
            header += f" | first {edges} | last {edges}"
            rule += "|---:|---:"
        header += " | share |"
        rule += "|---:|"
        lines = [header, rule]
        for name in names:
            line = f"| {name} | {mean_ms(self.calls, name):.1f}"
            if edges and n >= 2 * edges:
                line += (
                    f" | {mean_ms(self.calls[:edges], name):.1f}"
                    f" | {mean_ms(self.calls[-edges:], name):.1f}"
                )
            share = 100 * sum(c.get(name, 0.0) for c in self.calls) / total if total else 0
            line += f" | {share:.1f} % |"
            lines.append(line)
        mean_total = 1000 * total / n
        line = f"| **total per {per}** | **{mean_total:.1f}**"
        if edges and n >= 2 * edges:
            first = 1000 * sum(self.totals[:edges]) / edges
            last = 1000 * sum(self.totals[-edges:]) / edges
            line += f" | **{first:.1f}** | **{last:.1f}**"
        lines.append(line + " | 100 % |")
        return "\n".join(lines)


# --- infrastructure -------------------------------------------------------------------------


def load_servers():
    """tests/servers.py (standard library only), loaded by path: tests/ is not a package."""
    name = "_bench_servers"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "servers.py")
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot load {ROOT / 'tests' / 'servers.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def pubsub_emulator(workdir: Path) -> Iterator[Any]:
    """A Pub/Sub emulator of our own on 127.0.0.1; stopped by its PID (process group)."""
    servers = load_servers()
    progress("starting the Pub/Sub emulator ...")
    server = servers.start_pubsub_emulator(workdir / "pubsub-emulator", timeout=60)
    progress(f"Pub/Sub emulator pid {server.pid} on {server.host}")
    try:
        yield server
    finally:
        server.stop()
        progress(f"Pub/Sub emulator pid {server.pid} stopped")


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM / SIGHUP unwind like Ctrl-C, so the finally blocks stop the emulator."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread / not supported
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def quiet_stderr(log_path: Path) -> Iterator[None]:
    """The dispatcher logs one JSON line per event to stderr: send them to a file."""
    with log_path.open("a") as sink, contextlib.redirect_stderr(sink):
        yield


def slate_spec(game_date: dt.date):
    """450 pending of 510 players: 20 OUT, 10 DOUBTFUL, 30 below the minutes threshold;
    every expected player has production-ready features; nothing predicted or in flight."""
    from dispatcher.slate import SlateSpec

    spec = SlateSpec(
        game_date=game_date,
        teams=30,
        players_per_team=17,
        share_out=0.04,
        share_doubtful=0.02,
        share_below_minutes=0.059,
        share_missing_features=0.0,
        share_production_ready=1.0,
        seed=game_date.toordinal(),
    )
    if spec.counts().pending != PLAYERS_PENDING:
        raise BenchError(f"slate spec gives {spec.counts().pending} pending, not 450")
    return spec


def dbt_build(duckdb_path: Path, target_path: Path) -> float:
    """dispatcher.dbt.build in a child process (keeps dbt's global state and memory out of
    the process that measures); returns its wall time."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from dispatcher import dbt\n"
        "from dispatcher.config import Settings\n"
        "dbt.build(Settings(duckdb_path=Path(sys.argv[1]), dbt_target_path=Path(sys.argv[2])))\n"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(duckdb_path), str(target_path)],
        cwd=target_path.parent,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise BenchError(f"dbt build of {duckdb_path} failed:\n{tail}")
    return time.perf_counter() - started


def build_warehouse(path: Path, dates: Sequence[dt.date]) -> None:
    """Sample slates for the dates written into one DuckDB file, then one dbt build."""
    from dispatcher.slate import generate_slate, write_duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_duckdb(path, (generate_slate(slate_spec(day)) for day in dates))
    wrote = time.perf_counter() - started
    took = dbt_build(path, path.parent / "target")
    size = path.stat().st_size / 1e6
    progress(
        f"warehouse {path.parent.name}: {len(dates)} date(s) written in {wrote:.1f} s, "
        f"dbt build {took:.1f} s, {size:.0f} MB"
    )


def history_spec(game_date: dt.date):
    """A past date: 450 players, all expected, production-ready and predicted by all five
    systems (2,250 prediction rows), nothing pending."""
    from dispatcher.slate import SlateSpec

    return SlateSpec(
        game_date=game_date,
        teams=HISTORY_TEAMS,
        players_per_team=HISTORY_PLAYERS_PER_TEAM,
        share_out=0.0,
        share_doubtful=0.0,
        share_below_minutes=0.0,
        share_missing_features=0.0,
        share_production_ready=1.0,
        share_predicted=1.0,
        seed=game_date.toordinal(),
    )


def history_seasons() -> list[list[dt.date]]:
    return [
        [start + dt.timedelta(days=i) for i in range(HISTORY_SEASON_DATES)]
        for start in HISTORY_SEASON_STARTS
    ]


#: One published request per historical player (what the dispatcher would have left in the
#: ledger after dispatching those dates): attempt 1, claimed 08:31 UTC, acked 200 ms later.
_HISTORY_LEDGER = """
insert into nba_orchestration.request_ledger (
    request_id, game_date, player_lookup, game_id, attempt, batch_id, trigger_source,
    claimed_at, published_at, message_id
)
select
    strftime(game_date, '%Y-%m-%d') || '/' || player_lookup || '/1',
    game_date, player_lookup, game_id, 1,
    md5(strftime(game_date, '%Y-%m-%d')), 'pubsub',
    cast(game_date as timestamp) + interval 511 minute,
    cast(game_date as timestamp) + interval 511 minute + interval 200 millisecond,
    cast(hash(game_date, player_lookup) as varchar)
from nba_analytics.upcoming_player_game_context
where game_date < ?
"""


def build_history_warehouse(path: Path, target: dt.date) -> list[str]:
    """Row 6's warehouse: the target date's slate (450 pending, as in rows 1/2) after five
    seasons of fully predicted history, written season by season (each season a generator
    of slates, so one season's rows at most are in flight), then one dbt build, then the
    history's request ledger. Stops adding seasons when the generation would pass
    HISTORY_BUDGET_SECONDS. Returns notes with the actual row counts."""
    import duckdb

    from dispatcher.slate import generate_slate, write_duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    started = time.perf_counter()
    write_duckdb(path, generate_slate(slate_spec(target)))
    seasons = history_seasons()
    written = 0
    for number, dates in enumerate(seasons, start=1):
        write_duckdb(path, (generate_slate(history_spec(day)) for day in dates))
        written += 1
        spent = time.perf_counter() - started
        progress(f"history: season {number}/{len(seasons)} ({dates[0]}…) written, {spent:.0f} s")
        if number < len(seasons) and spent + spent / number > HISTORY_BUDGET_SECONDS:
            notes.append(
                f"history CUT to {written} of {len(seasons)} seasons: another would pass the "
                f"{HISTORY_BUDGET_SECONDS:.0f} s generation budget"
            )
            break
    wrote = time.perf_counter() - started
    took = dbt_build(path, path.parent / "target")
    with duckdb.connect(str(path)) as con:
        con.execute(_HISTORY_LEDGER, [target])
        counts = {
            name: con.execute(f"select count(*), count(distinct game_date) from {table}").fetchone()
            for name, table in (
                ("context", "nba_analytics.upcoming_player_game_context"),
                ("features", "nba_predictions.ml_feature_store_v2"),
                ("predictions", "nba_predictions.player_prop_predictions"),
                ("ledger", "nba_orchestration.request_ledger"),
            )
        }
        states = dict(
            con.execute(
                "select state, count(*) from nba_orchestration.fct_pending_players "
                "group by state order by state"
            ).fetchall()
        )
    history_dates = counts["context"][1] - 1
    expected_predicted = history_dates * HISTORY_TEAMS * HISTORY_PLAYERS_PER_TEAM
    if states.get("predicted") != expected_predicted or states.get("pending") != PLAYERS_PENDING:
        raise BenchError(f"history warehouse states {states}, expected {expected_predicted} "
                         f"predicted and {PLAYERS_PENDING} pending")  # fmt: skip
    size = path.stat().st_size / 1e6
    progress(
        f"warehouse {path.parent.name}: {history_dates} history dates + {target} written in "
        f"{wrote:.1f} s, dbt build {took:.1f} s, {size:.0f} MB"
    )
    notes.append(
        f"history warehouse: {history_dates} history dates ({written} seasons × "
        f"{HISTORY_SEASON_DATES}, from {seasons[0][0]}) + the target date {target}; rows: "
        + ", ".join(f"{name} {n:,}" for name, (n, _) in counts.items())
        + f"; states: {', '.join(f'{k} {v:,}' for k, v in states.items())}; "
        f"{size:.0f} MB; generated and written in {wrote:.0f} s, dbt build {took:.0f} s"
    )
    return notes


#: A small launcher between the bench and a child whose peak RSS is measured. A forked
#: (or vforked) child is charged the RSS of the process it was forked from until it execs,
#: so ru_maxrss of a child of this process (hundreds of MB once the history is built) would
#: be at least this process's peak. Forked from a ~10 MB interpreter, the child's own
#: ru_maxrss (from wait4) is its real peak. argv: result file, command...
_RSS_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def peak_rss_run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300.0,
) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run a child through _RSS_LAUNCHER; return (wall seconds, the child's peak RSS in MB
    (2^20 bytes), the completed process). The wall time includes the launcher's start."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory(prefix="rss-") as tmp,
    ):
        result = Path(tmp) / "maxrss"
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", _RSS_LAUNCHER, str(result), *argv],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group: a timeout kills both
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise BenchError(f"{' '.join(argv)} ran over {timeout:.0f} s: killed") from None
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(
            list(argv),
            process.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )
        if not result.exists():
            raise BenchError(f"no peak RSS for {' '.join(argv)}: {done.stderr[-1000:]}")
        maxrss = int(result.read_text())
    # ru_maxrss: kilobytes on Linux, bytes on macOS.
    scale = 2**20 if sys.platform == "darwin" else 2**10
    return wall, maxrss / scale, done


@contextlib.contextmanager
def warehouse_copy(template: Path, workdir: Path, name: str) -> Iterator[Path]:
    """A fresh copy of a built warehouse (so every run starts with everyone pending).

    The copy keeps the template's file name, in its own directory: DuckDB names the
    database after the file stem, and dbt's views refer to it by that name.
    """
    directory = workdir / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    path = directory / template.name
    shutil.copyfile(template, path)
    try:
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def settings_for(path: Path):
    from dispatcher.config import Settings

    return Settings(
        duckdb_path=path,
        transport="pubsub",
        gcp_project=PROJECT,
        dbt_target_path=path.parent / "target",
    )


def pending_messages(template: Path, workdir: Path) -> list[Any]:
    """The prediction requests a dispatch of the template would publish (same bodies and
    attributes; batch_id / requested_at differ), for every pending player of every date."""
    from dispatcher import ledger
    from dispatcher.dispatch import request_message
    from dispatcher.warehouse import connect

    with warehouse_copy(template, workdir, "messages") as path:
        wh = connect(settings_for(path))
        try:
            rows = wh.query(
                "select * from nba_orchestration.fct_pending_players where state = 'pending'"
                " order by game_date, player_lookup"
            )
        finally:
            wh.close()
    requested_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    messages = []
    for row in rows:
        row = {
            **row,
            "request_id": ledger.request_id(
                row["game_date"], row["player_lookup"], row["request_attempts"] + 1
            ),
        }
        messages.append(request_message(row, "baseline", "baseline", requested_at))
    return messages


def publish_one_at_a_time(messages: Sequence[Any]) -> None:
    """The old coordinator: default PublisherClient, wait on every future before the next."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    path = publisher.topic_path(PROJECT, REQUEST_TOPIC)
    try:
        for message in messages:
            publisher.publish(path, message.data, **message.attributes).result(
                timeout=FUTURE_TIMEOUT
            )
    finally:
        publisher.stop()
        publisher.transport.close()


def publish_batched(messages: Sequence[Any]) -> None:
    """Raw batched publishing: every message submitted, futures gathered at the end."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(
            max_messages=RAW_BATCH_MAX_MESSAGES, max_latency=RAW_BATCH_MAX_LATENCY
        )
    )
    path = publisher.topic_path(PROJECT, REQUEST_TOPIC)
    try:
        futures = [
            publisher.publish(path, message.data, **message.attributes) for message in messages
        ]
        for future in futures:
            future.result(timeout=FUTURE_TIMEOUT)
    finally:
        publisher.stop()
        publisher.transport.close()


def check_dispatch(result: Any, expected: int, date: dt.date) -> None:
    if result.exit_code != 0 or result.requests_published != expected:
        raise BenchError(
            f"{result.command} {date}: outcome {result.outcome}, exit {result.exit_code}, "
            f"published {result.requests_published} of {expected}: {result.error}"
        )


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = func()
    return time.perf_counter() - started, value


def dispatcher_command() -> list[str]:
    script = Path(sys.executable).parent / "dispatcher"
    if not script.exists():
        found = shutil.which("dispatcher")
        if found is None:
            raise BenchError(f"no `dispatcher` console script beside {sys.executable}")
        script = Path(found)
    return [str(script)]


def run_process(
    argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    return time.perf_counter() - started, done


def import_time_summary(stderr: str, top: int = 8) -> str:
    """The slowest top-level imports from `python -X importtime` output (cumulative)."""
    entries = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2]
        if name.startswith("  "):  # nested import: counted in its parent's cumulative
            continue
        entries.append((int(parts[1]), name.strip()))
    entries.sort(reverse=True)
    total = sum(us for us, _ in entries)
    lines = [f"top-level imports, cumulative: {total / 1e6:.2f} s in all"]
    lines += [f"  {us / 1e6:6.3f} s  {name}" for us, name in entries[:top]]
    return "\n".join(lines)


def cprofile_text(func: Callable[[], Any], top: int = 15) -> str:
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        func()
    finally:
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    # Drop pstats' preamble up to the column header.
    start = text.find("   ncalls")
    return text[start:].rstrip() if start >= 0 else text.rstrip()


# --- the rows -----------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    workdir: Path
    env: dict[str, str]
    one_date: Path | None = None
    backfill: Path | None = None
    history: Path | None = None
    history_notes: list[str] = field(default_factory=list)
    stages: dict[int, Stages] = field(default_factory=dict)
    extra: dict[int, list[str]] = field(default_factory=dict)

    @property
    def dispatcher_log(self) -> Path:
        return self.workdir / "dispatcher.log"


def row_trigger(ctx: Context) -> RowResult:
    """Row 1: Dispatcher.trigger of 450 pending, in-process, vs one-at-a-time publishes."""
    from dispatcher.dispatch import Dispatcher

    assert ctx.one_date is not None
    n = runs_for(ctx.args, 1)
    messages = pending_messages(ctx.one_date, ctx.workdir)
    if len(messages) != PLAYERS_PENDING:
        raise BenchError(f"expected {PLAYERS_PENDING} pending messages, got {len(messages)}")

    def trigger_once(stages: Stages | None = None) -> float:
        with warehouse_copy(ctx.one_date, ctx.workdir, "row1") as path:
            dispatcher = Dispatcher(settings_for(path))
            guard = stages.installed() if stages else contextlib.nullcontext()
            with quiet_stderr(ctx.dispatcher_log), guard:
                elapsed, result = timed(lambda: dispatcher.trigger(GAME_DATE))
        check_dispatch(result, PLAYERS_PENDING, GAME_DATE)
        return elapsed

    progress("row 1: warm-up (one trigger, one baseline message)")
    trigger_once()
    publish_one_at_a_time(messages[:1])
    stages = Stages()
    measured, baseline = [], []
    for i in range(n):
        measured.append(trigger_once(stages))
        baseline.append(timed(lambda: publish_one_at_a_time(messages))[0])
        progress(
            f"row 1: run {i + 1}/{n}: trigger {format_seconds(measured[-1])}, "
            f"one-at-a-time {format_seconds(baseline[-1])}"
        )
    ctx.stages[1] = stages
    if ctx.args.profile:
        with warehouse_copy(ctx.one_date, ctx.workdir, "row1-profile") as path:
            dispatcher = Dispatcher(settings_for(path))
            with quiet_stderr(ctx.dispatcher_log):
                text = cprofile_text(lambda: dispatcher.trigger(GAME_DATE))
        ctx.extra.setdefault(1, []).append("cProfile of one trigger (by tottime):\n" + text)
    return RowResult(
        row=1,
        title=f"`Dispatcher.trigger`, {PLAYERS_PENDING} requests, Pub/Sub emulator (in-process)",
        measured=measured,
        baseline=baseline,
        baseline_label=f"publishing the same {len(messages)} one at a time",
        goal_kind="speedup",
        goal=20.0,
        notes=[
            "measured: trigger() only (fresh warehouse copy per run, made before the clock "
            "starts; imports and one warm-up trigger done first); stage timers installed",
            "baseline: default PublisherClient, publish(...).result() per message, client "
            "creation and close included",
        ],
    )


def row_cli_trigger(ctx: Context) -> RowResult:
    """Row 2: the whole `dispatcher trigger --game-date D --json` process."""
    assert ctx.one_date is not None
    n = runs_for(ctx.args, 2)
    command = dispatcher_command()
    floor = [sys.executable, "-c", "import duckdb, google.cloud.pubsub_v1"]
    in_process: list[float] = []

    def once() -> float:
        with warehouse_copy(ctx.one_date, ctx.workdir, "row2") as path:
            env = {
                **ctx.env,
                "DISPATCHER_DUCKDB_PATH": str(path),
                "DISPATCHER_TRANSPORT": "pubsub",
                "DISPATCHER_GCP_PROJECT": PROJECT,
            }
            argv = [*command, "trigger", "--game-date", GAME_DATE.isoformat(), "--json"]
            wall, done = run_process(argv, env=env, cwd=ctx.workdir)
        if done.returncode != 0:
            raise BenchError(
                f"dispatcher trigger exited {done.returncode}: "
                f"{done.stdout[-500:]} {done.stderr[-1500:]}"
            )
        payload = json.loads(done.stdout.strip().splitlines()[-1])
        if payload["requests_published"] != PLAYERS_PENDING:
            raise BenchError(f"dispatcher trigger published {payload['requests_published']}")
        in_process.append(payload["duration_ms"] / 1000)
        return wall

    progress("row 2: warm-up")
    once()
    run_process(floor, env=ctx.env)
    in_process.clear()
    measured, baseline = [], []
    for i in range(n):
        measured.append(once())
        baseline.append(run_process(floor, env=ctx.env)[0])
        progress(
            f"row 2: run {i + 1}/{n}: {format_seconds(measured[-1])} "
            f"(import floor {format_seconds(baseline[-1])})"
        )
    dispatch = statistics.median(in_process)
    notes = [
        f"of the wall time, the dispatch itself (the command's duration_ms) is "
        f"{format_seconds(dispatch)} (median); the rest — interpreter start, imports, "
        f"Settings, exit — is {format_seconds(statistics.median(measured) - dispatch)}",
        "baseline: `python -c 'import duckdb, google.cloud.pubsub_v1'`, the import floor "
        "any process that reads DuckDB and publishes to Pub/Sub pays",
    ]
    if ctx.args.profile:
        with warehouse_copy(ctx.one_date, ctx.workdir, "row2-profile") as path:
            env = {
                **ctx.env,
                "DISPATCHER_DUCKDB_PATH": str(path),
                "DISPATCHER_TRANSPORT": "pubsub",
                "DISPATCHER_GCP_PROJECT": PROJECT,
            }
            argv = [
                sys.executable,
                "-X",
                "importtime",
                *command,
                "trigger",
                "--game-date",
                GAME_DATE.isoformat(),
                "--json",
            ]
            _, done = run_process(argv, env=env, cwd=ctx.workdir)
        ctx.extra.setdefault(2, []).append(
            "`-X importtime` of one `dispatcher trigger`:\n" + import_time_summary(done.stderr)
        )
    return RowResult(
        row=2,
        title="`dispatcher trigger --game-date D --json` process, 450 requests",
        measured=measured,
        baseline=baseline,
        baseline_label="import floor (duckdb + pubsub_v1)",
        goal_kind="absolute",
        goal=2.0,
        notes=notes,
    )


def row_backfill(ctx: Context) -> RowResult:
    """Row 3: Dispatcher.backfill over 100 dates vs raw batched publish of 45,000."""
    from dispatcher.dispatch import Dispatcher

    assert ctx.backfill is not None
    n = runs_for(ctx.args, 3)
    dates = [BACKFILL_START + dt.timedelta(days=i) for i in range(BACKFILL_DATES)]
    expected = PLAYERS_PENDING * BACKFILL_DATES
    messages = pending_messages(ctx.backfill, ctx.workdir)
    if len(messages) != expected:
        raise BenchError(f"expected {expected} pending messages, got {len(messages)}")

    def backfill_once(stages: Stages) -> float:
        with warehouse_copy(ctx.backfill, ctx.workdir, "row3") as path:
            dispatcher = Dispatcher(settings_for(path))
            started = time.perf_counter()
            with quiet_stderr(ctx.dispatcher_log), stages.installed():
                result = dispatcher.backfill(dates[0], dates[-1])
            elapsed = time.perf_counter() - started
            if result.exit_code or result.requests_published != expected:
                raise BenchError(
                    f"backfill published {result.requests_published} of {expected}: "
                    f"{result.outcome} {result.error or ''}"
                )
            return elapsed

    progress("row 3: warm-up (1,000 raw messages)")
    publish_batched(messages[:1000])
    measured: list[float] = []
    baseline: list[float] = []
    notes: list[str] = []
    started = time.perf_counter()
    for i in range(n):
        run_stages = Stages()
        baseline.append(timed(lambda: publish_batched(messages))[0])
        measured.append(backfill_once(run_stages))
        progress(
            f"row 3: run {i + 1}/{n}: backfill {format_seconds(measured[-1])}, "
            f"raw {format_seconds(baseline[-1])}"
        )
        spent = time.perf_counter() - started
        if i + 1 < n and spent + spent / (i + 1) > ROW3_BUDGET_SECONDS:
            notes.append(
                f"stopped after {i + 1} run(s): another would pass the "
                f"{ROW3_BUDGET_SECONDS:.0f} s budget"
            )
            break
    # Per date, the last run's calls: every run dispatches an identical copy.
    ctx.stages[3] = run_stages
    notes += [
        "measured: Dispatcher.backfill over the 100 dates (10 dates per claim and publish), "
        "on a fresh copy of the 100-date warehouse (copy made before the clock starts); "
        "stage timers installed",
        f"baseline: one raw PublisherClient(BatchSettings(max_messages="
        f"{RAW_BATCH_MAX_MESSAGES}, max_latency={RAW_BATCH_MAX_LATENCY})), all {expected} "
        "published, futures gathered at the end",
    ]
    if ctx.args.profile:
        with warehouse_copy(ctx.backfill, ctx.workdir, "row3-profile") as path:
            dispatcher = Dispatcher(settings_for(path))
            with quiet_stderr(ctx.dispatcher_log):
                text = cprofile_text(lambda: dispatcher.backfill(dates[0], dates[-1]))
        ctx.extra.setdefault(3, []).append(
            "cProfile of backfill() over the 100 dates (by tottime):\n" + text
        )
    return RowResult(
        row=3,
        title=f"`Dispatcher.backfill`, {BACKFILL_DATES} dates = {expected:,} requests (in-process)",
        measured=measured,
        baseline=baseline,
        baseline_label=f"raw batched publish of the same {expected:,}",
        goal_kind="ratio",
        goal=1.3,
        notes=notes,
    )


def row_help(ctx: Context) -> RowResult:
    """Row 4: `dispatcher --help` cold start vs `python -c pass`."""
    n = max(runs_for(ctx.args, 4), 1)
    command = [*dispatcher_command(), "--help"]
    floor = [sys.executable, "-c", "pass"]
    run_process(command, env=ctx.env, cwd=ctx.workdir)  # warm-up: page cache, .pyc
    run_process(floor, env=ctx.env, cwd=ctx.workdir)
    measured, baseline = [], []
    for _ in range(n):
        wall, done = run_process(command, env=ctx.env, cwd=ctx.workdir)
        if done.returncode != 0:
            raise BenchError(f"dispatcher --help exited {done.returncode}: {done.stderr}")
        measured.append(wall)
        baseline.append(run_process(floor, env=ctx.env, cwd=ctx.workdir)[0])
    progress(f"row 4: {n} runs, median {format_seconds(statistics.median(measured))}")
    if ctx.args.profile:
        _, done = run_process([sys.executable, "-X", "importtime", *command], env=ctx.env)
        ctx.extra.setdefault(4, []).append(
            "`-X importtime` of `dispatcher --help`:\n" + import_time_summary(done.stderr)
        )
    return RowResult(
        row=4,
        title="`dispatcher --help` cold start (new process)",
        measured=measured,
        baseline=baseline,
        baseline_label="`python -c pass`",
        goal_kind="absolute",
        goal=0.3,
        notes=["one unmeasured warm-up of each first (page cache); .pyc files as installed"],
    )


def row_cli_plan(ctx: Context) -> RowResult:
    """Row 5: the whole `dispatcher plan --game-date D --json` process (DuckDB, local)."""
    assert ctx.one_date is not None
    n = runs_for(ctx.args, 5)
    command = dispatcher_command()
    floor = [sys.executable, "-c", "import duckdb"]
    in_process: list[float] = []

    def plan_env(path: Path) -> dict[str, str]:
        return {**ctx.env, "DISPATCHER_DUCKDB_PATH": str(path), "DISPATCHER_TRANSPORT": "local"}

    def once() -> float:
        with warehouse_copy(ctx.one_date, ctx.workdir, "row5") as path:
            argv = [*command, "plan", "--game-date", GAME_DATE.isoformat(), "--json"]
            wall, done = run_process(argv, env=plan_env(path), cwd=ctx.workdir)
        if done.returncode != 0:
            raise BenchError(
                f"dispatcher plan exited {done.returncode}: "
                f"{done.stdout[-500:]} {done.stderr[-1500:]}"
            )
        payload = json.loads(done.stdout.strip().splitlines()[-1])
        would = sum(1 for item in payload["plan"] if item["action"] == "publish")
        if payload["outcome"] != "would_publish" or would != PLAYERS_PENDING:
            raise BenchError(f"dispatcher plan: {payload['outcome']}, would publish {would}")
        in_process.append(payload["duration_ms"] / 1000)
        return wall

    progress("row 5: warm-up")
    once()
    run_process(floor, env=ctx.env, cwd=ctx.workdir)
    in_process.clear()
    measured, baseline = [], []
    for i in range(n):
        measured.append(once())
        baseline.append(run_process(floor, env=ctx.env, cwd=ctx.workdir)[0])
        progress(
            f"row 5: run {i + 1}/{n}: {format_seconds(measured[-1])} "
            f"(import duckdb {format_seconds(baseline[-1])})"
        )
    dispatch = statistics.median(in_process)
    notes = [
        f"the plan itself (the command's duration_ms: readiness, coverage and "
        f"{PLAYERS_PENDING + 60}-player reads, run-log write) is {format_seconds(dispatch)} "
        f"(median); the rest — interpreter start, imports, Settings, JSON out, exit — is "
        f"{format_seconds(statistics.median(measured) - dispatch)}",
        "measured: fresh copy of the one-date warehouse per run (copied before the clock "
        f"starts), DISPATCHER_TRANSPORT=local; checked: {PLAYERS_PENDING} `publish` actions",
        "baseline: `python -c 'import duckdb'`, the import floor of a process that reads "
        "the DuckDB warehouse",
    ]
    if ctx.args.profile:
        with warehouse_copy(ctx.one_date, ctx.workdir, "row5-profile") as path:
            argv = [sys.executable, "-X", "importtime", *command,
                    "plan", "--game-date", GAME_DATE.isoformat(), "--json"]  # fmt: skip
            _, done = run_process(argv, env=plan_env(path), cwd=ctx.workdir)
        ctx.extra.setdefault(5, []).append(
            "`-X importtime` of one `dispatcher plan`:\n" + import_time_summary(done.stderr)
        )
    return RowResult(
        row=5,
        title=f"`dispatcher plan --game-date D --json` process, DuckDB, {PLAYERS_PENDING} "
        "pending, local transport",
        measured=measured,
        baseline=baseline,
        baseline_label="`python -c 'import duckdb'`",
        goal_kind="absolute",
        goal=1.5,
        notes=notes,
    )


def row_history_reads(ctx: Context) -> list[RowResult]:
    """Row 6: the dispatcher's mart reads on five seasons of history vs one day."""
    from dispatcher import marts
    from dispatcher.warehouse import connect

    assert ctx.one_date is not None and ctx.history is not None
    n = runs_for(ctx.args, 6)
    reads: dict[str, Callable[[Any], Any]] = {
        "pending": lambda wh: marts.players(wh, GAME_DATE, ["pending"]),
        "coverage": lambda wh: marts.coverage(wh, GAME_DATE),
        "readiness": lambda wh: marts.readiness(wh, GAME_DATE),
    }
    samples: dict[tuple[str, str], list[float]] = defaultdict(list)

    def check(name: str, where: str, value: Any) -> None:
        if name == "pending":
            got = len(value)
        elif name == "coverage":
            got = (value or {}).get("players_pending")
        else:
            got = (value or {}).get("players_ready")
        if got != PLAYERS_PENDING:
            raise BenchError(f"row 6: {name} read on {where} gives {got}, not {PLAYERS_PENDING}")

    with warehouse_copy(ctx.one_date, ctx.workdir, "row6-one-day") as one_day:
        warehouses = {
            "history": connect(settings_for(ctx.history)),
            "one day": connect(settings_for(one_day)),
        }
        try:
            progress("row 6: warm-up (each read once on each warehouse)")
            for name, read in reads.items():
                for where, wh in warehouses.items():
                    check(name, where, read(wh))
            for i in range(n):
                for name, read in reads.items():
                    for where, wh in warehouses.items():
                        elapsed, value = timed(lambda read=read, wh=wh: read(wh))
                        check(name, where, value)
                        samples[name, where].append(elapsed)
                progress(
                    f"row 6: run {i + 1}/{n}: "
                    + "; ".join(
                        f"{name} {format_seconds(samples[name, 'history'][-1])} vs "
                        f"{format_seconds(samples[name, 'one day'][-1])}"
                        for name in reads
                    )
                )
        finally:
            for wh in warehouses.values():
                wh.close()
    readiness_ratio = statistics.median(samples["readiness", "history"]) / statistics.median(
        samples["readiness", "one day"]
    )
    common = [
        *ctx.history_notes,
        "one-day warehouse: only the target date (the rows 1/2 warehouse, a fresh copy); "
        "both dbt-built, both opened once (one connection each), every read warmed up once; "
        "runs interleave history / one day read by read",
    ]
    pending = RowResult(
        row=6,
        label="6a",
        title=f"pending read `marts.players(wh, D, ['pending'])`, {PLAYERS_PENDING} rows: "
        "5 seasons of history",
        measured=samples["pending", "history"],
        baseline=samples["pending", "one day"],
        baseline_label="same read, one-day warehouse",
        goal_kind="ratio",
        goal=HISTORY_GOAL_RATIO,
        notes=common,
    )
    coverage = RowResult(
        row=6,
        label="6b",
        title="coverage read `marts.coverage(wh, D)`: 5 seasons of history",
        measured=samples["coverage", "history"],
        baseline=samples["coverage", "one day"],
        baseline_label="same read, one-day warehouse",
        goal_kind="ratio",
        goal=HISTORY_GOAL_RATIO,
        notes=[
            "not in the table, measured alongside: the readiness read "
            f"`marts.readiness(wh, D)` (every trigger's first read) takes "
            f"{format_seconds(statistics.median(samples['readiness', 'history']))} on the "
            f"history vs {format_seconds(statistics.median(samples['readiness', 'one day']))} "
            f"on one day ({readiness_ratio:.2f}×); samples: history ["
            + ", ".join(format_seconds(s) for s in samples["readiness", "history"])
            + "], one day ["
            + ", ".join(format_seconds(s) for s in samples["readiness", "one day"])
            + "]"
        ],
    )
    return [pending, coverage]


def row_backfill_rss(ctx: Context) -> RowResult:
    """Row 7: peak RSS of the `dispatcher backfill` process over 100 dates (45,000)."""
    assert ctx.backfill is not None
    n = runs_for(ctx.args, 7)
    expected = PLAYERS_PENDING * BACKFILL_DATES
    end = BACKFILL_START + dt.timedelta(days=BACKFILL_DATES - 1)
    command = dispatcher_command()
    help_argv = [*command, "--help"]
    floor_argv = [sys.executable, "-c", "import duckdb, google.cloud.pubsub_v1"]
    walls: list[float] = []
    floor: list[float] = []

    def once() -> float:
        with warehouse_copy(ctx.backfill, ctx.workdir, "row7") as path:
            env = {
                **ctx.env,
                "DISPATCHER_DUCKDB_PATH": str(path),
                "DISPATCHER_TRANSPORT": "pubsub",
                "DISPATCHER_GCP_PROJECT": PROJECT,
            }
            argv = [*command, "backfill", "--start", BACKFILL_START.isoformat(),
                    "--end", end.isoformat(), "--json"]  # fmt: skip
            wall, peak, done = peak_rss_run(
                argv, env=env, cwd=ctx.workdir, timeout=ROW7_TIMEOUT_SECONDS
            )
        if done.returncode != 0:
            raise BenchError(
                f"dispatcher backfill exited {done.returncode}: "
                f"{done.stdout[-500:]} {done.stderr[-1500:]}"
            )
        payload = json.loads(done.stdout.strip().splitlines()[-1])
        if payload["requests_published"] != expected:
            raise BenchError(f"dispatcher backfill published {payload['requests_published']}")
        walls.append(wall)
        return peak

    def help_peak() -> float:
        _, peak, done = peak_rss_run(help_argv, env=ctx.env, cwd=ctx.workdir)
        if done.returncode != 0:
            raise BenchError(f"dispatcher --help exited {done.returncode}: {done.stderr}")
        return peak

    measured, baseline = [], []
    for i in range(n):
        baseline.append(help_peak())
        floor.append(peak_rss_run(floor_argv, env=ctx.env, cwd=ctx.workdir)[1])
        measured.append(once())
        progress(
            f"row 7: run {i + 1}/{n}: backfill peak {measured[-1]:.0f} MB in "
            f"{format_seconds(walls[-1])} (--help {baseline[-1]:.0f} MB)"
        )
    return RowResult(
        row=7,
        title=f"peak RSS of `dispatcher backfill --start D1 --end D{BACKFILL_DATES} --json`, "
        f"{expected:,} requests, Pub/Sub emulator",
        measured=measured,
        baseline=baseline,
        baseline_label="`dispatcher --help`",
        goal_kind="absolute",
        goal=300.0,
        unit="MB",
        notes=[
            "peak RSS = the child's own ru_maxrss from wait4, taken by a small launcher "
            "process so that the bench's own RSS is not inherited (MB = 2^20 bytes); a fresh "
            "copy of the row 3 warehouse per run, env DISPATCHER_DUCKDB_PATH, "
            "DISPATCHER_TRANSPORT=pubsub, DISPATCHER_GCP_PROJECT, PUBSUB_EMULATOR_HOST; "
            f"checked: {expected:,} published",
            f"backfill process wall time: {', '.join(format_seconds(w) for w in walls)}",
            "for scale: `python -c 'import duckdb, google.cloud.pubsub_v1'` peaks at "
            + ", ".join(f"{mb:.0f} MB" for mb in floor),
        ],
    )


RUNNERS: dict[int, Callable[[Context], RowResult | list[RowResult]]] = {
    1: row_trigger,
    2: row_cli_trigger,
    3: row_backfill,
    4: row_help,
    5: row_cli_plan,
    6: row_history_reads,
    7: row_backfill_rss,
}


# --- main ---------------------------------------------------------------------------------


def report(
    info: dict[str, str],
    results: Sequence[RowResult],
    ctx: Context | None,
    total_seconds: float | None = None,
) -> str:
    parts = [
        "## Machine",
        "",
        render_machine(info),
        "",
        "## Results",
        "",
        render_table(results),
        "",
    ]
    if total_seconds is not None:
        mode = "--quick" if ctx is not None and ctx.args.quick else "full"
        parts += [
            f"Bench wall time: {total_seconds:.0f} s ({mode}; emulator start and warehouse "
            "builds included).",
            "",
        ]
    parts += [
        "Samples and notes:",
        "",
        render_samples(results),
    ]
    if ctx is not None:
        if 1 in ctx.stages:
            parts += [
                "",
                "## Row 1: where one trigger's time goes (mean over the runs)",
                "",
                ctx.stages[1].table(per="trigger"),
            ]
        if 3 in ctx.stages:
            parts += [
                "",
                "## Row 3: where the backfill's time goes (last run; waiting on the"
                " publisher counts as glue)",
                "",
                ctx.stages[3].table(per="backfill"),
            ]
        for row in sorted(ctx.extra):
            for text in ctx.extra[row]:
                parts += ["", f"### Row {row} profile", "", "```", text, "```"]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bench_started = time.perf_counter()
    info = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="dispatcher-bench-"))
    progress(f"workdir {workdir}; rows {', '.join(f'{r} ({ROWS[r]})' for r in args.rows)}")
    results: list[RowResult] = []
    ctx = Context(args=args, workdir=workdir, env=dict(os.environ))
    saved_emulator_host = os.environ.get("PUBSUB_EMULATOR_HOST")
    try:
        with terminate_as_exit(), contextlib.ExitStack() as stack:
            from dispatcher.transport import REQUEST_TOPIC as topic

            if topic != REQUEST_TOPIC:
                raise BenchError(f"the request topic is now {topic!r}; update bench/run.py")
            needs_emulator = any(row in args.rows for row in (1, 2, 3, 7))
            if needs_emulator:
                server = stack.enter_context(pubsub_emulator(workdir))
                os.environ["PUBSUB_EMULATOR_HOST"] = server.host
                ctx.env["PUBSUB_EMULATOR_HOST"] = server.host
                from dispatcher.transport_pubsub import ensure_topics

                ensure_topics(PROJECT, [REQUEST_TOPIC])
            if any(row in args.rows for row in (1, 2, 5, 6)):
                ctx.one_date = workdir / "one-date" / "warehouse.duckdb"
                build_warehouse(ctx.one_date, [GAME_DATE])
            if 3 in args.rows or 7 in args.rows:
                ctx.backfill = workdir / "backfill" / "warehouse.duckdb"
                build_warehouse(
                    ctx.backfill,
                    [BACKFILL_START + dt.timedelta(days=i) for i in range(BACKFILL_DATES)],
                )
            if 6 in args.rows:
                # Only for this run: inside the workdir, removed with it.
                ctx.history = workdir / "history" / "warehouse.duckdb"
                ctx.history_notes = build_history_warehouse(ctx.history, GAME_DATE)
            for row in args.rows:
                progress(f"row {row} ({ROWS[row]}) ...")
                outcome = RUNNERS[row](ctx)
                results.extend(outcome if isinstance(outcome, list) else [outcome])
    finally:
        if saved_emulator_host is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = saved_emulator_host
        if args.keep_workdir:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(info, results, ctx, time.perf_counter() - bench_started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
