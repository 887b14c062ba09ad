"""Run the reliability suites at full size and write docs/RELIABILITY.md from their figures.

    .venv/bin/python -m bench.reliability            # the full sizes (see SIZES)
    .venv/bin/python -m bench.reliability --ci-sizes # the sizes CI runs (the defaults)

The suites are ordinary pytest files (CI runs them at the sizes their defaults give);
each records the figures of what it proved through tests/reliability.py, into the file
named by DISPATCHER_RELIABILITY_FIGURES. This command names that file, sets the sizes,
runs pytest once over the suites (it starts the emulators it needs, as the suite does)
and renders the figures as markdown. The document is written only when every test passed:
a figure in it is a figure of a run with zero violations.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "RELIABILITY.md"
FIGURES_ENV = "DISPATCHER_RELIABILITY_FIGURES"

SUITES = (
    "tests/test_schedules.py",
    "tests/test_fuzz.py",
    "tests/test_claim_lease.py",
    "tests/test_faults.py",
    "tests/test_bounded_time.py",
    "tests/test_injection.py",
    "tests/test_secrets.py",
    "tests/test_load.py",
)

#: Environment for the full run: more than CI runs (CI keeps the suites' defaults).
SIZES = {
    "DISPATCHER_SCHEDULES": "1000",
    "DISPATCHER_PUBSUB_SCHEDULES": "50",
    "DISPATCHER_BIGQUERY_SCHEDULES": "3",
    "FUZZ_INPUTS": "10000",
    "DISPATCHER_LOAD_SECONDS": "60",
}

#: The sections, in the document's order: suite name -> (title, what it proves).
SECTIONS = {
    "schedules": (
        "Randomized schedules",
        "Seeded random schedules of Phase 4 waves and rewrites, completion events "
        "(duplicated, late, out of order, for the wrong date), Scheduler ticks, pushes "
        "redelivered, publish failures, worker failures and redeliveries, claims left by "
        "killed dispatchers, the clock crossing both leases and concurrent dispatchers; "
        "after every step: never two requests for a player inside a lease, ledger, outbox "
        "and run log agreeing, and alerts exactly per the dedup rules; at the end every "
        "ready player requested and predicted by every system.",
    ),
    "fuzz": (
        "Fuzzed input",
        "Generated malformed pushes, Scheduler bodies and `trigger --event` values: every "
        "one answered 400/413 or exit 2 with a reason, nothing written, nothing published, "
        "the server healthy after.",
    ),
    "faults": (
        "Faults injected",
        "One test per fault: a clear error, exit ≠ 0 where the run failed, and a re-run "
        "that publishes exactly what is missing.",
    ),
    "bounded_time": (
        "Bounded time",
        "Every network call against a port that takes the connection and never answers, "
        "or a listener that stays silent: the command or route returns with a clear error. "
        "`bound_s` is the call's own timeout; `measured_s` the whole command or route, its "
        "start-up and retries included; the test fails past bound × 2 + 15 s.",
    ),
    "injection": (
        "Injection",
        "Every value from input reaches the warehouse as a query parameter, never in the "
        "SQL text.",
    ),
    "secrets": (
        "Secrets",
        "Sentinel secrets never appear in logs, errors, `--json`, the logs' tables or the "
        "report.",
    ),
    "load": (
        "Load held",
        "`dispatcher serve` under gunicorn, 8 concurrent clients of mixed valid, duplicate "
        "and malformed pushes and Scheduler calls.",
    ),
}


def run(ci_sizes: bool, pytest_args: list[str]) -> tuple[int, list[dict[str, Any]], float]:
    """pytest over the suites; (exit code, the figures recorded, seconds)."""
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        figures = Path(tmp) / "figures.jsonl"
        env = dict(os.environ, **{FIGURES_ENV: str(figures)})
        if not ci_sizes:
            env.update({key: value for key, value in SIZES.items() if key not in os.environ})
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES]
        started = time.monotonic()
        code = subprocess.call([*argv, *pytest_args], cwd=ROOT, env=env)
        seconds = time.monotonic() - started
        lines = figures.read_text().splitlines() if figures.exists() else []
    return code, [json.loads(line) for line in lines], seconds


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} {_cell(item)}" for key, item in value.items())
    if isinstance(value, list):
        return ", ".join(_cell(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|")


def _table(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key != "suite" and key not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key, "")) for key in columns) + " |")
    return lines


def _total(rows: list[dict[str, Any]], key: str) -> int:
    return sum(int(row.get(key) or 0) for row in rows)


def headline(by_suite: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The figures people ask for first."""
    everything = [row for rows in by_suite.values() for row in rows]
    load = by_suite.get("load", [])
    lines = [
        f"- schedules run: {_total(by_suite.get('schedules', []), 'schedules')}"
        + "".join(
            f"; {row.get('backend')}"
            + (f" with the {row['transport']} transport" if row.get("transport") else "")
            + f": {row.get('schedules')}"
            for row in by_suite.get("schedules", [])
        ),
        f"- malformed inputs fuzzed: {_total(by_suite.get('fuzz', []), 'inputs')}",
        "- faults injected: "
        + str(sum(len(row.get("faults") or [row]) for row in by_suite.get("faults", []))),
        f"- network calls bounded: "
        f"{sum(len(row.get('calls') or [row]) for row in by_suite.get('bounded_time', []))}",
    ]
    for row in load:
        lines.append(
            f"- load held: {row.get('clients')} clients for {row.get('seconds')} s,"
            f" {row.get('requests')} requests, p99 {row.get('p99_ms')} ms,"
            f" 5xx other than 503: {row.get('errors_5xx')}"
        )
    lost = _total(everything, "lost")
    duplicated = _total(everything, "duplicated") + _total(everything, "duplicates")
    lines.append(f"- requests lost: {lost}; duplicated: {duplicated}")
    return lines


def render(figures: list[dict[str, Any]], seconds: float, command: str) -> str:
    by_suite: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in figures:
        by_suite[row["suite"]].append(row)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Reliability",
        "",
        "What the reliability suites proved in their latest full run, and the figures they",
        "measured. Generated; do not edit by hand. To regenerate (the emulators are started",
        "by the suites, as in CI):",
        "",
        "```",
        command,
        "```",
        "",
        f"Latest run: {when}, {seconds / 60:.1f} min, on {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}; every test passed (zero violations).",
        "CI runs the same suites at their default sizes on every change.",
        "",
        "## Headline",
        "",
        *headline(by_suite),
    ]
    for suite, (title, proves) in SECTIONS.items():
        rows = by_suite.pop(suite, [])
        if suite == "bounded_time":  # one row per call bounded
            rows = [call for row in rows for call in row.get("calls", [row])]
        lines += ["", f"## {title}", "", proves, ""]
        lines += _table(rows) if rows else ["(no figures recorded)"]
    for suite, rows in sorted(by_suite.items()):
        lines += ["", f"## {suite}", "", *_table(rows)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci-sizes", action="store_true",
                        help="run the suites at CI's sizes (their defaults)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the document")
    args, pytest_args = parser.parse_known_args(argv)
    code, figures, seconds = run(args.ci_sizes, pytest_args)
    if code != 0:
        print(f"bench.reliability: pytest exited {code}; {args.out} left as it was",
              file=sys.stderr)  # fmt: skip
        return code
    command = ".venv/bin/python -m bench.reliability" + (" --ci-sizes" if args.ci_sizes else "")
    args.out.write_text(render(figures, seconds, command), encoding="utf-8")
    print(f"bench.reliability: wrote {args.out} ({len(figures)} figures)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
