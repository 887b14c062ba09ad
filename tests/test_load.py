"""`dispatcher serve` (gunicorn, DuckDB, local outbox) under 8 concurrent clients of mixed
traffic: pushes for several dates, redeliveries, malformed pushes, Scheduler /retry and
/status, GET /health. The harness is bench/rows/load.py (bench row 11 runs it for 60 s);
here the mix lasts DISPATCHER_LOAD_SECONDS (default 10, then 3 s of GET /health alone, so
that the file stays within 30 s) and the test asserts what must hold whatever the
timings: nothing lost, no 5xx but 503, each kind only its expected codes, every pending
player requested exactly once, the RSS of the server's tree grown by less than
RSS_GROWTH_LIMIT_MB. The latencies are printed and recorded, never asserted (the machine
is shared and noisy)."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import pytest
from reliability import record
from serving import serve_env, start_serve
from warehouses import FILE_NAME, copy_of

from dispatcher import dbt
from dispatcher.config import Settings
from dispatcher.sandbox.load import write_duckdb
from dispatcher.sandbox.slate import SlateSpec, generate_slate

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(ROOT))

from bench.rows.load import (  # noqa: E402
    CLIENTS,
    EXPECTED,
    KINDS,
    LoadPlan,
    LoadReport,
    Sample,
    check,
    drive,
    ready_players,
)

SECONDS = float(os.environ.get("DISPATCHER_LOAD_SECONDS", "10"))
#: Then GET /health alone (a thousand requests or more) before the last RSS sample.
HEALTH_SECONDS = 3.0
#: Four game dates; the first is dispatched in the warm-up, the other three open during
#: the mix. The idle date has no game.
DATES = tuple(dt.date(2026, 11, 10) + dt.timedelta(days=i) for i in range(4))
IDLE = dt.date(2026, 11, 20)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The slates and `dbt run` (the models only: a few seconds less than the build,
    whose data tests other suites run), nothing in flight."""
    workdir = tmp_path_factory.mktemp("load")
    settings = Settings(duckdb_path=workdir / FILE_NAME, dbt_target_path=workdir / "target")
    write_duckdb(settings.duckdb_path, [
        generate_slate(SlateSpec(game_date=day, seed=day.toordinal())) for day in DATES
    ])  # fmt: skip
    dbt.run_dbt(settings, ["run"])
    return settings.duckdb_path


def test_serve_holds_mixed_load(template, tmp_path, capsys):
    settings = copy_of(template, tmp_path)
    ready = ready_players(settings, DATES)
    assert all(len(players) > 300 for players in ready.values()), ready
    plan = LoadPlan(dates=DATES, idle_date=IDLE, seconds=SECONDS, clients=CLIENTS, seed=11,
                    health_seconds=HEALTH_SECONDS)  # fmt: skip
    server = start_serve(tmp_path, serve_env(settings))
    try:
        report = drive(server.url, server.pid, plan)
    finally:
        server.stop()
    check(report, ready, settings)
    with capsys.disabled():
        print()
        for line in report.lines():
            print(f"  load: {line}")
    assert report.violations() == [], "\n".join(report.lines())
    # What violations() stands on, spelled out.
    assert report.lost == 0 and report.errors_5xx == 0 and report.duplicated == 0
    assert report.pushed == list(DATES)
    requested = {key for key, n in report.outbox.items() if n == 1}
    assert requested == {(day, p) for day in DATES for p in ready[day]}
    kinds = report.by_kind()
    assert all(kinds[kind] for kind in KINDS), {k: len(v) for k, v in kinds.items()}
    assert len(report.health) > 100  # the cheap phase: many requests on the common path
    dispatched = [s for s in report.samples if s.outcome == "dispatched"]
    assert len(dispatched) == len(DATES) - 1  # the warm-up dispatched the first date
    assert report.rss_start_mb > 30 and len(report.rss) >= 3
    figures = report.figures()
    keep = ("clients", "seconds", "requests", "by_status", "p50_ms", "p95_ms", "p99_ms",
            "errors_5xx", "lost", "duplicated", "rss_start_mb", "rss_end_mb", "rss_growth_mb",
            "rss_peak_mb", "p99_ms_by_kind", "players_requested")  # fmt: skip
    record("load", **{key: figures[key] for key in keep}, dates=len(DATES),
           health_requests=len(report.health))  # fmt: skip


def _report(samples: list[Sample], outbox: dict, rss_end: float = 200.0) -> LoadReport:
    from collections import Counter

    plan = LoadPlan(dates=DATES[:2], idle_date=IDLE, seconds=1.0)
    ready = {DATES[0]: frozenset({"a", "b"}), DATES[1]: frozenset({"c"})}
    return LoadReport(
        plan=plan, samples=samples, health=[], warmup_requests=0, wall_seconds=1.0,
        rss=[(0.0, 180.0, 2), (1.0, rss_end, 2)], pushed=list(DATES[:2]), ready=ready,
        outbox=Counter(outbox), claims=Counter(outbox), warmup_published=sum(outbox.values()),
    )  # fmt: skip


def test_the_checks_catch_what_they_guard():
    """Each invariant of LoadReport.violations fails on the fault it guards against."""
    good = {(DATES[0], "a"): 1, (DATES[0], "b"): 1, (DATES[1], "c"): 1}
    ok = [Sample(kind, 0.0, 0.1, min(EXPECTED[kind])) for kind in KINDS]
    assert _report(ok, good).violations() == []
    cases = {
        "got no answer": (ok + [Sample("push", 0.0, 30.0, None, error="TimeoutError: x")], good),
        "5xx other than 503": (ok + [Sample("retry", 0.0, 0.1, 500)], good),
        "answered 400": (ok + [Sample("push", 0.0, 0.1, 400)], good),
        "answered 503": (ok + [Sample("status", 0.0, 0.1, 503)], good),
        "never requested": (ok, {k: v for k, v in good.items() if k[1] != "b"}),
        "duplicated": (ok, {**good, (DATES[0], "a"): 2}),
        "not pending": (ok, {**good, (DATES[1], "zz"): 1}),
    }
    for expected, (samples, outbox) in cases.items():
        problems = _report(samples, outbox).violations()
        assert any(expected in p for p in problems), (expected, problems)
    grown = _report(ok, good, rss_end=500.0).violations()
    assert any("RSS grew" in p for p in grown), grown
    lying = _report(ok, good)
    lying.warmup_published = 2
    assert any("answers say 2 published" in p for p in lying.violations())
