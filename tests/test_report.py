"""`dispatcher report`: the page is gathered from the marts, written whole, and renders in
a real browser (headless Chromium) with its charts, its lines, its missing players and
nothing fetched; hostile text stays text; an empty warehouse says so; BigQuery gathers
the same figures as DuckDB."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import scenarios
from conftest import _on_ci
from warehouses import build_template, copy_of

from dispatcher.config import Settings
from dispatcher.report import CHARTS, build_report, game_days, gather, write_report
from dispatcher.sandbox.slate import SlateSpec, default_phase4_completed_at
from dispatcher.warehouse import connect

DISPATCHER = Path(sys.executable).with_name("dispatcher")
HOSTILE = "<script>alert(1)</script>"
NOW = dt.datetime(2026, 11, 17, 12, 0, tzinfo=dt.UTC)

# -- the warehouse: six game days, one date off the schedule, alerts ---------------------------


def _day(day: int, minutes_after_phase4: int, source: str, **shares: Any) -> tuple[SlateSpec, str]:
    game_date = dt.date(2026, 11, day)
    now = default_phase4_completed_at(game_date) + dt.timedelta(minutes=minutes_after_phase4)
    spec = SlateSpec(game_date=game_date, teams=6, seed=day, now=now, **shares)
    return spec, source


DAYS = [
    _day(10, 8, "pubsub", share_missing_features=0.0, share_production_ready=1.0,
         share_predicted=0.97, share_in_flight=1.0),
    _day(11, 25, "scheduler", share_production_ready=0.95, share_predicted=0.85,
         share_in_flight=1.0),
    _day(12, 0, "none", share_production_ready=0.5),  # critical, never requested
    _day(13, 0, "none", on_schedule=False),  # a slate without a game: not a game day
    _day(14, 4, "pubsub", share_production_ready=0.9, share_predicted=0.6, share_in_flight=1.0),
    _day(15, 40, "retry", share_production_ready=0.85, share_predicted=0.3,
         share_in_flight=0.5),
    _day(16, 3, "pubsub", share_production_ready=0.9, share_predicted=0.5,
         share_partially_predicted=0.1, share_in_flight=0.3),
]  # fmt: skip
GAME_DATES = [spec.game_date for spec, _ in DAYS if spec.on_schedule]
LATEST = GAME_DATES[-1]
OFF_SCHEDULE = dt.date(2026, 11, 13)

#: (game_date, level, kind, status): one alert_log row each.
ALERTS = [
    (dt.date(2026, 11, 1), "critical", "new", "sent"),  # outside every range asked for
    (dt.date(2026, 11, 11), "warning", "new", "sent"),
    (dt.date(2026, 11, 11), "warning", "repeat", "sent"),
    (dt.date(2026, 11, 12), "critical", "new", "sent"),
    (dt.date(2026, 11, 12), "critical", "repeat", "suppressed"),
    (OFF_SCHEDULE, "warning", "new", "sent"),  # not a game day
    (dt.date(2026, 11, 15), "critical", "worsened", "sent"),
    (dt.date(2026, 11, 15), "critical", "worsened", "failed"),
    (LATEST, "warning", "new", "sent"),
    (LATEST, "warning", "resolved", "sent"),
    (LATEST, "info", "new", "sent"),
]
#: What the alerts chart must stack per game day: {date: {series: count}}.
SENT = {
    dt.date(2026, 11, 11): {"warning": 2},
    dt.date(2026, 11, 12): {"critical": 1},
    dt.date(2026, 11, 15): {"critical": 1},
    LATEST: {"warning": 1, "resolved": 1, "info": 1},
}


def _extras(path: Path) -> None:
    """A hostile Phase 3 player on the latest date (expected, no features: not_ready), the
    ledger's trigger sources per date, and the alert_log rows."""
    import duckdb

    with duckdb.connect(str(path)) as con:
        con.execute(
            "insert into nba_analytics.upcoming_player_game_context"
            " select * replace (? as player_lookup, 30.0 as avg_minutes_per_game_last_7,"
            " null as player_status)"
            " from nba_analytics.upcoming_player_game_context where game_date = ? limit 1",
            [HOSTILE, LATEST],
        )
        for spec, source in DAYS:
            con.execute(
                "update nba_orchestration.request_ledger set trigger_source = ?"
                " where game_date = ?",
                [source, spec.game_date],
            )
        for n, (game_date, level, kind, status) in enumerate(ALERTS):
            con.execute(
                "insert into nba_orchestration.alert_log (alert_id, game_date, run_id, rule,"
                " level, kind, message, dedup_key, channel, status, created_at)"
                " values (?, ?, 'run', 'coverage', ?, ?, ?, 'key', 'log', ?, ?)",
                [f"a{n}", game_date, level, kind, f"{HOSTILE} {level}", status,
                 dt.datetime.combine(game_date, dt.time(15, n))],
            )  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("report-warehouse")
    path = build_template(workdir, [spec for spec, _ in DAYS])
    _extras(path)
    return path


@pytest.fixture
def settings(template: Path, tmp_path: Path) -> Settings:
    (tmp_path / "wh").mkdir()
    return copy_of(template, tmp_path / "wh")


def _mart(settings: Settings, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    warehouse = connect(settings)
    try:
        return warehouse.query(sql, params)
    finally:
        warehouse.close()


# -- Chromium --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        reason = "chromium is not installed (.ci/run installs Debian's package)"
        if _on_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return found


def _chromium(binary: str, page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--no-first-run", f"--user-data-dir={profile}",
         "--window-size=1280,2000", *args, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180, check=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip


def _render(binary: str, page: Path, tmp_path: Path) -> tuple[str, Path]:
    """The DOM Chromium built from the file, and its screenshot."""
    dom = _chromium(binary, page, tmp_path, "--dump-dom").stdout
    png = tmp_path / "report.png"
    _chromium(binary, page, tmp_path, f"--screenshot={png}")
    assert png.exists() and png.stat().st_size > 0
    return dom, png


class Page(HTMLParser):
    """What the rendered DOM holds: per chart its SVGs, marks and texts; the headings;
    the missing players' table; every tag name."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, list[str]]] = {}
        self.headings: list[str] = []
        self.rows: list[list[str]] = []
        self.tags: set[str] = set()
        self.text: list[str] = []
        self._chart: str | None = None
        self._heading: list[str] | None = None
        self._table = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        attributes = dict(attrs)
        if tag == "figure" and attributes.get("data-chart"):
            self._chart = attributes["data-chart"]
            self.charts[self._chart] = {"svg": [], "marks": [], "labels": [], "text": []}
        chart = self.charts.get(self._chart or "")
        if chart is not None:
            if tag == "svg":
                chart["svg"].append(tag)
            role = attributes.get("aria-roledescription")
            if role in ("bar", "square", "rule mark"):
                chart["marks"].append(role)
            if attributes.get("aria-label"):
                chart["labels"].append(attributes["aria-label"] or "")
        if tag == "h2":
            self._heading = []
        if tag == "table" and attributes.get("id") == "not-predicted":
            self._table = True
        if self._table and tag == "tr":
            self.rows.append([])
        if self._table and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._chart = None
        if tag == "h2" and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        if tag == "table":
            self._table = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._chart is not None:
            self.charts[self._chart]["text"].append(data)
        if self._heading is not None:
            self._heading.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _page(dom: str) -> Page:
    page = Page()
    page.feed(dom)
    page.close()
    return page


def _assert_not_blank(png: Path) -> None:
    from PIL import Image

    with Image.open(png) as image:
        rgb = image.convert("RGB")
        counts = {colour: n for n, colour in rgb.getcolors(rgb.width * rgb.height)}
        total = rgb.width * rgb.height
    ink = total - counts.get((255, 255, 255), 0)
    assert ink > 0.05 * total, f"only {ink} of {total} pixels not white"
    assert len(counts) > 200
    # The bar colours themselves: the charts were drawn, not only the text.
    for colour in ((0x2E, 0x7D, 0x32), (0xC6, 0x28, 0x28)):
        assert counts.get(colour, 0) > 500, colour


def _assert_offline(text: str) -> None:
    """No resource reference of any kind: nothing to fetch when the page is viewed."""
    lowered = text.lower()
    assert "http://" not in lowered and "https://" not in lowered
    for reference in ("<script", "<link", "<img", "<iframe", "@import", "url(", "src=", "href="):
        assert reference not in lowered, reference


# -- the tests -------------------------------------------------------------------------------


def test_the_report_shows_the_last_game_days_as_the_marts_say(settings):
    warehouse = connect(settings)
    try:
        report = build_report(warehouse, days=30, now=NOW)
        last_three = build_report(warehouse, days=3, now=NOW).summary
        until = build_report(warehouse, days=2, end=dt.date(2026, 11, 13), now=NOW).summary
    finally:
        warehouse.close()
    summary = report.summary
    assert summary.dates == tuple(GAME_DATES)  # the off-schedule date is not a game day
    assert (summary.first_date, summary.last_date) == (GAME_DATES[0], LATEST)
    assert summary.charts == tuple(CHARTS)
    assert last_three.dates == tuple(GAME_DATES[-3:])
    assert until.dates == (dt.date(2026, 11, 11), dt.date(2026, 11, 12))

    coverage = _mart(settings, "select * from nba_orchestration.fct_prediction_coverage"
                     " where game_date between @first and @last",
                     {"first": GAME_DATES[0], "last": LATEST})  # fmt: skip
    latency = _mart(settings, "select * from nba_orchestration.fct_dispatch_latency"
                    " where game_date between @first and @last",
                    {"first": GAME_DATES[0], "last": LATEST})  # fmt: skip
    by_date = {row["game_date"]: row for row in report.data.days}
    for row in coverage:
        if row["game_date"] in by_date:
            assert by_date[row["game_date"]]["coverage_pct"] == row["coverage_pct"]
            assert by_date[row["game_date"]]["coverage_warning_pct"] == 90
    for row in latency:
        if row["game_date"] in by_date:
            day = by_date[row["game_date"]]
            assert day["minutes_to_first_request"] == row["minutes_to_first_request"]
            assert day["latency_warning_minutes"] == 10
    sources = {d["game_date"]: d["first_trigger_source"] for d in report.data.days}
    assert sources == {spec.game_date: None if source == "none" else source
                       for spec, source in DAYS if spec.on_schedule}  # fmt: skip

    stacked: dict[dt.date, dict[str, int]] = {}
    for row in report.data.alerts:
        stacked.setdefault(row["game_date"], {})
        stacked[row["game_date"]][row["series"]] = (
            stacked[row["game_date"]].get(row["series"], 0) + row["alerts"]
        )
    assert stacked == SENT

    missing = _mart(settings, "select player_lookup, state from"
                    " nba_orchestration.fct_player_dispatch_state"
                    " where game_date = @d and state <> 'predicted'", {"d": LATEST})  # fmt: skip
    assert summary.players_not_predicted == len(missing) > 10
    assert HOSTILE in {row["player_lookup"] for row in missing}
    assert HOSTILE not in report.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report.html
    _assert_offline(report.html)


def test_the_cli_writes_a_page_that_chromium_renders(settings, chromium, tmp_path):
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    run = subprocess.run(
        [str(DISPATCHER), "report", "--days", "30", "--out", str(out), "--json"],
        env={**env, "DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    payload = json.loads(run.stdout)
    assert payload["out"] == str(out.resolve()) and payload["url"] == out.resolve().as_uri()
    assert payload["game_days"] == len(GAME_DATES)
    assert (payload["first_date"], payload["last_date"]) == (
        GAME_DATES[0].isoformat(), LATEST.isoformat(),
    )  # fmt: skip
    assert payload["charts"] == list(CHARTS)
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temporary left
    text = out.read_text(encoding="utf-8")
    _assert_offline(text)
    assert HOSTILE not in text

    dom, png = _render(chromium, out, tmp_path)
    _assert_not_blank(png)
    page = _page(dom)
    assert "script" not in page.tags  # the hostile player_lookup stayed text
    assert set(page.charts) == set(CHARTS)
    for name, title in CHARTS.items():
        assert title in page.headings
        chart = page.charts[name]
        assert len(chart["svg"]) == 1, name
        assert chart["marks"], name
    bars = {name: page.charts[name]["marks"].count("bar") for name in CHARTS}
    with_requests = sum(1 for spec, source in DAYS if spec.on_schedule and source != "none")
    assert bars["latency"] == with_requests
    assert bars["alerts"] == sum(len(series) for series in SENT.values())
    assert page.charts["trigger_source"]["marks"].count("square") == len(GAME_DATES)
    assert "coverage warning line at 90 %" in page.charts["coverage"]["labels"]
    assert "latency warning line at 10 min" in page.charts["latency"]["labels"]
    assert "ready threshold line at 80 %" in page.charts["readiness"]["labels"]
    assert "- - - coverage warning line: 90 %" in page.charts["coverage"]["text"]
    assert "- - - latency warning line: 10 min" in page.charts["latency"]["text"]
    assert {"pubsub", "scheduler", "retry", "none"} <= set(page.charts["trigger_source"]["text"])

    missing = _mart(settings, "select player_lookup, state, reason from"
                    " nba_orchestration.fct_player_dispatch_state"
                    " where game_date = @d and state <> 'predicted'", {"d": LATEST})  # fmt: skip
    header, *rows = page.rows
    assert header[:5] == ["player", "team", "opponent", "state", "reason"]
    assert sorted((r[0], r[3], r[4]) for r in rows) == sorted(
        (m["player_lookup"], m["state"], m["reason"]) for m in missing
    )
    assert [HOSTILE, "not_ready", "no row in ml_feature_store_v2"] in [
        [r[0], r[3], r[4]] for r in rows
    ]
    body = " ".join(page.text)
    assert f"{len(GAME_DATES)} game days, {GAME_DATES[0]} to {LATEST}" in body
    assert f"Latest game day: {LATEST}" in body and "Made " in body


def test_the_cli_prints_where_it_wrote_and_refuses_a_missing_directory(settings, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env["DISPATCHER_DUCKDB_PATH"] = str(settings.duckdb_path)
    out = tmp_path / "r.html"
    run = subprocess.run(
        [str(DISPATCHER), "report", "--days", "2", "--game-date", "2026-11-12",
         "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"wrote {out.resolve()}: 2 game days, 2026-11-11 to 2026-11-12" in run.stdout
    assert out.resolve().as_uri() in run.stdout
    bad = subprocess.run(
        [str(DISPATCHER), "report", "--out", str(tmp_path / "no" / "such" / "r.html")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "--out" in bad.stderr and "no directory" in bad.stderr
    assert "Traceback" not in bad.stderr
    gone = subprocess.run(
        [str(DISPATCHER), "report", "--out", str(out)],
        env={**env, "DISPATCHER_DUCKDB_PATH": str(tmp_path / "missing.duckdb")},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert gone.returncode == 1
    assert [line for line in gone.stderr.splitlines() if line.startswith("Error:")] == [
        line for line in gone.stderr.splitlines() if line.strip()
    ]
    assert "missing.duckdb" in gone.stderr
    assert "2026-11-11" in out.read_text()  # the failed run left the last report alone


def test_no_game_day_is_a_page_that_says_so(settings, chromium, tmp_path):
    out = tmp_path / "empty.html"
    summary = write_report(settings, days=30, out=out, end=dt.date(2026, 11, 1), now=NOW)
    assert summary.dates == () and summary.charts == () and summary.first_date is None
    assert summary.as_json()["game_days"] == 0
    text = out.read_text(encoding="utf-8")
    _assert_offline(text)
    dom, _png = _render(chromium, out, tmp_path)
    page = _page(dom)
    assert not page.charts
    assert "No game day in the warehouse up to 2026-11-01" in " ".join(page.text)


class FakeWarehouse:
    """Game days in memory; records every bounded range it was asked for."""

    kind = "fake"
    statements = 0

    def __init__(self, days: dict[dt.date, int]) -> None:
        self.days = days  # game_date -> players_in_slate
        self.ranges: list[tuple[dt.date, dt.date]] = []

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        assert params is not None and "game_date" in sql
        if "players_in_slate" not in sql.split("from")[0]:
            return []
        first, last = params["first"], params["last"]
        assert first <= last
        self.ranges.append((first, last))
        return [
            {"game_date": d, "players_in_slate": n}
            for d, n in sorted(self.days.items(), reverse=True)
            if first <= d <= last
        ]

    def close(self) -> None:
        pass


def test_the_last_date_is_the_latest_game_day_that_happened_or_has_a_slate():
    today = dt.date(2027, 1, 10)
    past = {today - dt.timedelta(days=n): 300 for n in range(0, 40, 2)}
    schedule_only = {today + dt.timedelta(days=n): 0 for n in (1, 3, 5)}
    warehouse = FakeWarehouse({**past, **schedule_only, today - dt.timedelta(days=1): 0})
    dates, _ = game_days(warehouse, days=3, today=today)
    # Yesterday had games but no slate yet: it happened, so it counts; the future
    # schedule-only dates do not.
    assert dates == [today - dt.timedelta(days=2), today - dt.timedelta(days=1), today]
    warehouse.days[today + dt.timedelta(days=3)] = 120  # a sandbox slate ahead of today
    dates, _ = game_days(warehouse, days=2, today=today)
    assert dates == [today + dt.timedelta(days=1), today + dt.timedelta(days=3)]
    dates, until = game_days(warehouse, days=2, end=today - dt.timedelta(days=3), today=today)
    assert dates == [today - dt.timedelta(days=6), today - dt.timedelta(days=4)]
    assert until == today - dt.timedelta(days=4)


def test_the_search_goes_back_in_bounded_windows():
    today = dt.date(2027, 1, 10)
    old = {dt.date(2025, 3, 1) + dt.timedelta(days=n): 300 for n in range(10)}
    warehouse = FakeWarehouse(old)
    dates, _ = game_days(warehouse, days=5, today=today)
    assert dates == sorted(old)[-5:]
    assert len(warehouse.ranges) <= 6
    for earlier, later in zip(warehouse.ranges[1:], warehouse.ranges[:-1], strict=True):
        assert earlier[1] == later[0] - dt.timedelta(days=1)  # contiguous, none read twice
    empty = FakeWarehouse({})
    dates, until = game_days(empty, days=30, today=today)
    assert dates == [] and until == today + dt.timedelta(days=14)
    assert empty.ranges[-1][0] == dt.date(2000, 1, 1) and len(empty.ranges) < 12
    report = build_report(empty, days=30, now=NOW)
    assert "No game day in the warehouse up to" in report.html
    with pytest.raises(ValueError):
        game_days(empty, days=0, today=today)


def test_bigquery_gathers_what_duckdb_gathers(duckdb_scenarios, bigquery_scenarios):
    today = scenarios.NOW.date()
    gathered = []
    for settings in (duckdb_scenarios, bigquery_scenarios):
        warehouse = connect(settings)
        try:
            data = gather(warehouse, days=6, end=scenarios.READY.game_date, today=today)
            html = build_report(warehouse, days=6, now=scenarios.NOW).html
        finally:
            warehouse.close()
        assert 'data-chart="coverage"' in html and "http://" not in html
        gathered.append(data)
    on_duckdb, on_bigquery = gathered
    assert on_duckdb.dates == on_bigquery.dates
    assert scenarios.OFF_SCHEDULE.game_date not in on_duckdb.dates
    assert on_duckdb.dates[-1] == scenarios.READY.game_date and len(on_duckdb.dates) == 6
    assert on_duckdb.days == on_bigquery.days
    assert on_duckdb.not_predicted == on_bigquery.not_predicted
    assert len(on_duckdb.not_predicted) > 0


def test_no_heavy_import_until_a_report_is_made():
    code = (
        "import sys; import dispatcher.report, dispatcher.cli\n"
        "print(','.join(m for m in ('altair', 'vl_convert', 'duckdb') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""


def test_the_renderer_runs_apart_so_the_caller_can_still_fork(settings, tmp_path):
    """vl-convert's engine and allocator threads would make a later fork() hang in the
    process that loaded it; the report loads it in a child process only."""
    code = (
        "import subprocess, sys\n"
        "from dispatcher.config import Settings\n"
        "from dispatcher.report import write_report\n"
        f"write_report(Settings(duckdb_path={str(settings.duckdb_path)!r}),"
        f" out=__import__('pathlib').Path({str(tmp_path / 'r.html')!r}))\n"
        "assert 'vl_convert' not in sys.modules, 'vl_convert loaded in the caller'\n"
        "for _ in range(20):\n"
        "    subprocess.run([sys.executable, '-c', 'pass'], check=True, timeout=30)\n"
        "print('forked')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "forked", out.stderr[-2000:]
    assert "<svg" in (tmp_path / "r.html").read_text()
