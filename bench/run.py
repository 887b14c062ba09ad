"""Benchmark the dispatcher against the issue's goals and print a markdown table.

Run from the repository root, either way:

    .venv/bin/python -m bench.run [--quick] [--rows 1,3] [--runs N] [--profile]
    .venv/bin/python bench/run.py  [--quick] [--rows 1,3] [--runs N] [--profile]

It starts its own emulators on 127.0.0.1 (stopped by PID at the end, also on an error,
Ctrl-C or SIGTERM), builds the warehouses in a temporary directory (child processes),
measures each row against a baseline taken in the same run, and prints the machine, the
table, the samples, then where the time goes (from each run's ``RunResult.stages``).
Progress goes to stderr; the report to stdout. See bench/README.md for the rows.

Importing this module is cheap (standard library only): the heavy imports happen inside
the functions that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: make `bench` / `dispatcher` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.config import (  # noqa: E402
    GAME_DATE,
    HISTORY_QUICK_SEASONS,
    HISTORY_SEASON_STARTS,
    LOAD_DATES,
    PROJECT,
    REQUEST_TOPIC,
    backfill_dates,
)
from bench.infra import BenchError, emulator, progress, terminate_as_exit  # noqa: E402
from bench.rows import (  # noqa: E402
    BACKFILL,
    BIGQUERY,
    HISTORY,
    LOAD,
    ONE_DATE,
    OPT_IN_ROWS,
    PUBSUB,
    ROWS,
)
from bench.session import Session  # noqa: E402
from bench.table import RowResult, machine_info, render_report, usable_cpus  # noqa: E402
from bench.warehouses import Builds  # noqa: E402

# --- arguments --------------------------------------------------------------------------


def parse_rows(text: str) -> list[int]:
    """'1,3' / '1 3' / 'trigger-450,cli-help' / 'all' -> sorted row numbers. The opt-in
    rows (serve-load) are selected by name only, and not by 'all'."""
    if text.strip().lower() == "all":
        return sorted(ROWS)
    by_name = {row.name: number for number, row in {**ROWS, **OPT_IN_ROWS}.items()}
    rows: set[int] = set()
    for token in text.replace(",", " ").split():
        token = token.strip().lower()
        if token.isdigit() and int(token) in ROWS:
            rows.add(int(token))
        elif token in by_name:
            rows.add(by_name[token])
        else:
            choices = ", ".join(f"{n} ({row.name})" for n, row in ROWS.items())
            choices += ", " + ", ".join(row.name for row in OPT_IN_ROWS.values())
            raise argparse.ArgumentTypeError(f"unknown row {token!r}; choose from {choices}")
    if not rows:
        raise argparse.ArgumentTypeError("no rows given")
    return sorted(rows)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _row(number: int):
    return ROWS[number] if number in ROWS else OPT_IN_ROWS[number]


def _runs_text(quick: bool) -> str:
    return ", ".join(
        f"row {n}: {row.runs_quick if quick else row.runs_full}" for n, row in ROWS.items()
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark the Phase 4 -> 5 dispatcher against the issue's goals.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"fewer repetitions ({_runs_text(True)}) instead of {_runs_text(False)}"
        f", and {HISTORY_QUICK_SEASONS} season(s) of history for row 6 instead of "
        f"{len(HISTORY_SEASON_STARTS)}",
    )
    parser.add_argument(
        "--rows",
        type=parse_rows,
        default=sorted(ROWS),
        metavar="ROWS",
        help="rows to run, e.g. '1,3' or 'trigger-450,cli-help' (default: all): "
        + ", ".join(f"{n}={row.name}" for n, row in ROWS.items())
        + "; only by name, not in all: "
        + ", ".join(row.name for row in OPT_IN_ROWS.values()),
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
        help="keep the temporary directory (warehouses, build and emulator logs, the "
        "dispatcher's JSON log)",
    )
    return parser


def runs_for(args: argparse.Namespace, row: int) -> int:
    if args.runs is not None:
        return args.runs
    return _row(row).runs_quick if args.quick else _row(row).runs_full


# --- main ---------------------------------------------------------------------------------


def _prepare(session: Session, needs: set[str], stack: contextlib.ExitStack) -> None:
    """Start the builds, the emulators the rows need, and wait for every build."""
    from dispatcher.transport import REQUEST_TOPIC as topic

    if topic != REQUEST_TOPIC:
        raise BenchError(f"the request topic is now {topic!r}; update bench/config.py")
    workdir = session.workdir
    builds = Builds(workdir, slots=usable_cpus())
    stack.callback(builds.close)
    # Longest first (the history); the BigQuery build, which waits for its emulator,
    # before the backfill's, so that the two longest chains overlap.
    if HISTORY in needs:
        session.warehouses[HISTORY] = workdir / "history" / "warehouse.duckdb"
        builds.submit(HISTORY, "history", path=session.warehouses[HISTORY], target=GAME_DATE,
                      seasons=session.history_seasons)  # fmt: skip
    if ONE_DATE in needs:
        session.warehouses[ONE_DATE] = workdir / "one-date" / "warehouse.duckdb"
        builds.submit(ONE_DATE, "duckdb", path=session.warehouses[ONE_DATE], dates=[GAME_DATE])
    if PUBSUB in needs:
        server = stack.enter_context(emulator("pubsub", workdir))
        os.environ["PUBSUB_EMULATOR_HOST"] = session.env["PUBSUB_EMULATOR_HOST"] = server.host
        from dispatcher.transport_pubsub import ensure_topics

        ensure_topics(PROJECT, [REQUEST_TOPIC])
    if BIGQUERY in needs:
        server = stack.enter_context(emulator("bigquery", workdir, project=PROJECT))
        session.bigquery_endpoint = server.url
        builds.submit(BIGQUERY, "bigquery", endpoint=server.url, game_date=GAME_DATE,
                      target_path=workdir / "bigquery" / "target")  # fmt: skip
    if BACKFILL in needs:
        session.warehouses[BACKFILL] = workdir / "backfill" / "warehouse.duckdb"
        builds.submit(BACKFILL, "duckdb", path=session.warehouses[BACKFILL],
                      dates=backfill_dates())  # fmt: skip
    if LOAD in needs:
        session.warehouses[LOAD] = workdir / "load" / "warehouse.duckdb"
        builds.submit(LOAD, "duckdb", path=session.warehouses[LOAD], dates=list(LOAD_DATES))
    session.build_notes = builds.wait()
    builds.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    info = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="dispatcher-bench-"))
    rows = [_row(number) for number in args.rows]
    progress(f"workdir {workdir}; rows {', '.join(f'{r.number} ({r.name})' for r in rows)}")
    session = Session(
        args=args,
        workdir=workdir,
        env=dict(os.environ),
        runs={row.number: runs_for(args, row.number) for row in rows},
        history_seasons=HISTORY_QUICK_SEASONS if args.quick else len(HISTORY_SEASON_STARTS),
    )
    results: list[RowResult] = []
    saved_host = os.environ.get("PUBSUB_EMULATOR_HOST")
    try:
        with terminate_as_exit(), contextlib.ExitStack() as stack:
            _prepare(session, set().union(*(row.needs for row in rows)), stack)
            for row in rows:
                progress(f"row {row.number} ({row.name}) ...")
                results.extend(row.run(session))
    finally:
        if saved_host is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = saved_host
        if args.keep_workdir:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    mode = "--quick" if args.quick else "full"
    footer = (
        f"Bench wall time: {time.perf_counter() - started:.0f} s ({mode}; emulator starts "
        "and warehouse builds included)."
    )
    sections = [(heading, body) for _, heading, body in sorted(session.sections, key=_row_of)]
    print(render_report(info, results, sections, footer))
    return 0


def _row_of(section: tuple[int, str, str]) -> int:
    return section[0]


if __name__ == "__main__":
    sys.exit(main())
