"""`dispatcher report`: the last game days on one static HTML page, for people.

One file that opens anywhere (a browser, an attachment) and fetches nothing: the charts
are Vega-Altair specs rendered to SVG offline by vl-convert and inlined, the style is
inline, and no URL of any kind is left in the page. Every value that comes from the
warehouse is HTML-escaped here (the SVG renderer escapes its own text).

What it reads, through the :class:`~dispatcher.warehouse.Warehouse` interface, with
every query bounded on ``game_date``: ``fct_phase4_readiness`` (which dates are game
days), ``fct_prediction_coverage``, ``fct_dispatch_latency``, the latest date's
``fct_player_dispatch_state`` rows that are not predicted, and the sent rows of
``alert_log``. The lines the charts draw (coverage warning, readiness threshold,
latency warning) are the thresholds the marts carry, never a second copy.

Which dates: the last ``days`` game days up to ``end``. Without ``end``, the report ends
at the latest game day that has happened (today in PT or before), or at a later one
that already has a Phase 3 slate (a sandbox date): a production schedule lists the
season's future games, and a date without players is not worth a report.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from alerts import ALERT_LOG

from .events import EARLIEST_GAME_DATE, MAX_DAYS_AHEAD
from .marts import COVERAGE, LATENCY
from .warehouse import DISPATCH_STATE, READINESS, Warehouse, connect

if TYPE_CHECKING:
    from .config import Settings

PACIFIC = ZoneInfo("America/Los_Angeles")

#: The charts, in page order: name -> title.
CHARTS = {
    "coverage": "Prediction coverage per game day",
    "readiness": "Phase 4 readiness per game day",
    "latency": "Minutes from Phase 4 ready to the first request",
    "trigger_source": "Which trigger dispatched first",
    "alerts": "Alerts sent per game day, by level",
}

#: The first window searched back for game days; doubled until enough are found.
_MIN_WINDOW_DAYS = 62

_GAME_DAYS = f"""
select game_date, players_in_slate
from {READINESS}
where game_date between @first and @last and is_game_day
order by game_date desc
"""

_READINESS = f"""
select
    game_date, games_scheduled, players_expected, players_ready, ready_pct, is_ready,
    is_critical, ready_pct_threshold, ready_count_threshold
from {READINESS}
where game_date between @first and @last and is_game_day
"""

_COVERAGE = f"""
select
    game_date, players_predicted, players_in_flight, players_pending, players_missing,
    coverage_pct, alert_level, coverage_warning_pct
from {COVERAGE}
where game_date between @first and @last
"""

_LATENCY = f"""
select
    game_date, phase4_ready_at, first_requested_at, first_trigger_source,
    minutes_to_first_request, is_sla_met, latency_alert_level, latency_warning_minutes
from {LATENCY}
where game_date between @first and @last
"""

_ALERTS_SENT = f"""
select game_date, level, kind, count(*) as alerts
from {ALERT_LOG}
where game_date between @first and @last and status = @status
group by game_date, level, kind
"""

_NOT_PREDICTED = f"""
select
    player_lookup, team_abbr, opponent_team_abbr, state, reason, systems_predicted,
    request_attempts
from {DISPATCH_STATE}
where game_date = @game_date and state <> @predicted
order by state, player_lookup
"""

_LEVEL_COLOURS = {
    "ok": "#2e7d32", "info": "#1f77b4", "warning": "#f0a30a", "critical": "#c62828",
    "resolved": "#7b8794",
}  # fmt: skip
_READY_COLOURS = {"ready": "#2e7d32", "not ready": "#f0a30a", "critical": "#c62828"}
_SOURCE_COLOURS = {
    "pubsub": "#1f77b4", "scheduler": "#9467bd", "retry": "#17becf", "manual": "#8c564b",
    "backfill": "#e377c2", "demo": "#bcbd22", "none": "#c7c7c7",
}  # fmt: skip
_LINE_COLOUR = "#d62728"
_WIDTH, _HEIGHT = 860, 220


class ReportError(RuntimeError):
    """The report could not be written where asked."""


@dataclass(frozen=True)
class ReportData:
    """What the page shows: one merged row per game day (oldest first), the latest
    date's players that are not predicted, and the sent alerts per date and level."""

    days: list[dict[str, Any]]
    not_predicted: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    #: The last date searched (the report's end, or the search's upper bound).
    searched_until: dt.date

    @property
    def dates(self) -> tuple[dt.date, ...]:
        return tuple(day["game_date"] for day in self.days)

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.days[-1] if self.days else None


@dataclass(frozen=True)
class ReportSummary:
    """What a report covers; `out` is where it was written (None before writing)."""

    dates: tuple[dt.date, ...]
    charts: tuple[str, ...]
    players_not_predicted: int
    made_at: dt.datetime
    out: Path | None = None

    @property
    def first_date(self) -> dt.date | None:
        return self.dates[0] if self.dates else None

    @property
    def last_date(self) -> dt.date | None:
        return self.dates[-1] if self.dates else None

    def as_json(self) -> dict[str, Any]:
        out = self.out.resolve() if self.out is not None else None
        return {
            "out": str(out) if out else None,
            "url": out.as_uri() if out else None,
            "game_days": len(self.dates),
            "first_date": self.first_date.isoformat() if self.first_date else None,
            "last_date": self.last_date.isoformat() if self.last_date else None,
            "dates": [day.isoformat() for day in self.dates],
            "charts": list(self.charts),
            "players_not_predicted": self.players_not_predicted,
            "made_at": self.made_at.isoformat(timespec="seconds"),
        }


@dataclass(frozen=True)
class Report:
    html: str
    summary: ReportSummary
    data: ReportData = field(repr=False)


# -- gathering ----------------------------------------------------------------------------


def _choose(rows: Sequence[Mapping[str, Any]], end: dt.date | None, today: dt.date):
    """The report's last date among the game days found (see the module docstring)."""
    if end is not None:
        return max((r["game_date"] for r in rows), default=None)
    happened = [r["game_date"] for r in rows if r["game_date"] <= today]
    with_slate = [r["game_date"] for r in rows if r["players_in_slate"]]
    return max([*happened[:1], *with_slate[:1]], default=None)


def game_days(
    warehouse: Warehouse, *, days: int, end: dt.date | None = None, today: dt.date
) -> tuple[list[dt.date], dt.date]:
    """The last `days` game days (oldest first) and the last date searched. Searches back
    from `end` (default: the furthest a game date may be ahead of `today`) in windows
    that double, one bounded query each, until enough are found or 2000 is reached."""
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    upper = end or today + dt.timedelta(days=MAX_DAYS_AHEAD)
    rows: list[dict[str, Any]] = []
    window, last = max(2 * days, _MIN_WINDOW_DAYS), upper
    while True:
        reach = (last - EARLIEST_GAME_DATE).days
        first = EARLIEST_GAME_DATE if window > reach else last - dt.timedelta(days=window - 1)
        if first <= last:
            rows += warehouse.query(_GAME_DAYS, {"first": first, "last": last})
        chosen = _choose(rows, end, today)
        found = [r["game_date"] for r in rows if chosen is not None and r["game_date"] <= chosen]
        if len(found) >= days or first <= EARLIEST_GAME_DATE:
            return sorted(found[:days]), chosen or upper
        last, window = first - dt.timedelta(days=1), window * 2


def _by_date(rows: Iterable[Mapping[str, Any]]) -> dict[dt.date, Mapping[str, Any]]:
    return {row["game_date"]: row for row in rows}


def gather(
    warehouse: Warehouse, *, days: int = 30, end: dt.date | None = None, today: dt.date
) -> ReportData:
    """Read what the page shows: four queries over the dates' range, one for the latest
    date's players (plus the game-day search)."""
    dates, searched_until = game_days(warehouse, days=days, end=end, today=today)
    if not dates:
        return ReportData(days=[], not_predicted=[], alerts=[], searched_until=searched_until)
    bounds = {"first": dates[0], "last": dates[-1]}
    readiness = _by_date(warehouse.query(_READINESS, bounds))
    coverage = _by_date(warehouse.query(_COVERAGE, bounds))
    latency = _by_date(warehouse.query(_LATENCY, bounds))
    wanted = set(dates)
    alerts = [
        {**row, "series": "resolved" if row["kind"] == "resolved" else row["level"]}
        for row in warehouse.query(_ALERTS_SENT, {**bounds, "status": "sent"})
        if row["game_date"] in wanted
    ]
    sent: dict[dt.date, int] = {}
    for row in alerts:
        sent[row["game_date"]] = sent.get(row["game_date"], 0) + int(row["alerts"])
    merged = [
        {
            **readiness.get(day, {}), **coverage.get(day, {}), **latency.get(day, {}),
            "game_date": day, "alerts_sent": sent.get(day, 0),
        }
        for day in dates
    ]  # fmt: skip
    not_predicted = warehouse.query(
        _NOT_PREDICTED, {"game_date": dates[-1], "predicted": "predicted"}
    )
    return ReportData(
        days=merged, not_predicted=not_predicted, alerts=alerts, searched_until=searched_until
    )


# -- charts -------------------------------------------------------------------------------


#: The renderer, run in a process of its own: vl-convert starts a JavaScript engine,
#: an async runtime and an allocator with background threads in the process that loads
#: it, after which fork() there can hang (a later subprocess of a long-lived caller,
#: such as a test session or a service, would never start). Specs in, SVGs out, JSON.
_RENDER = (
    "import json, sys\n"
    "import vl_convert\n"
    "job = json.load(sys.stdin)\n"
    "json.dump([vl_convert.vegalite_to_svg(spec, vl_version=job['vl_version'])"
    " for spec in job['specs']], sys.stdout)\n"
)
RENDER_TIMEOUT_SECONDS = 120


def _render_svgs(charts: Mapping[str, Any]) -> dict[str, str]:
    """Every chart as inline SVG, rendered offline by vl-convert in a child process (see
    _RENDER), the XML namespace declarations dropped (HTML puts an inline <svg> in its
    namespace itself), so that the page names no URL at all."""
    from altair.vegalite import SCHEMA_VERSION

    job = {
        "vl_version": "_".join(SCHEMA_VERSION.split(".")[:2]),
        "specs": [chart.to_dict() for chart in charts.values()],
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RENDER], input=json.dumps(job), capture_output=True,
            text=True, timeout=RENDER_TIMEOUT_SECONDS,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ReportError(
            f"rendering the charts took more than {RENDER_TIMEOUT_SECONDS} s"
        ) from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ReportError(f"rendering the charts failed: {reason[:300]}")
    svgs = json.loads(done.stdout)
    out = {}
    for name, svg in zip(charts, svgs, strict=True):
        for declaration in (
            ' xmlns="http://www.w3.org/2000/svg"',
            ' xmlns:xlink="http://www.w3.org/1999/xlink"',
        ):
            svg = svg.replace(declaration, "", 1)
        out[name] = svg
    return out


def _x(alt: Any, dates: Sequence[str]) -> Any:
    return alt.X(
        "game_date:O", title="game date", scale=alt.Scale(domain=list(dates)),
        axis=alt.Axis(labelAngle=-45),
    )  # fmt: skip


def _colour(alt: Any, field_name: str, title: str, colours: Mapping[str, str]) -> Any:
    return alt.Color(
        f"{field_name}:N", title=title,
        scale=alt.Scale(domain=list(colours), range=list(colours.values())),
    )  # fmt: skip


def _threshold_lines(alt: Any, values: Iterable[Any], *, label: str, unit: str):
    """A dashed horizontal rule per distinct threshold the marts applied, and the title
    that names it (above the plot, where no bar hides it)."""
    distinct = sorted({float(v) for v in values if v is not None})
    shown = ", ".join(f"{v:g}{unit}" for v in distinct) or "none"
    rule = (
        alt.Chart(alt.Data(values=[{"threshold": v} for v in distinct]))
        .mark_rule(
            color=_LINE_COLOUR, strokeDash=[6, 4], size=2,
            description=f"{label} line at {shown}",
        )
        .encode(y="threshold:Q")
    )  # fmt: skip
    title = alt.TitleParams(
        f"- - - {label} line: {shown}", anchor="end", color=_LINE_COLOUR, fontSize=12,
        fontWeight="normal",
    )  # fmt: skip
    return rule, title


def _bar_chart(
    alt: Any,
    days: Sequence[Mapping[str, Any]],
    value: str,
    status: Callable[[Mapping[str, Any]], str],
    *,
    y: Any,
    colour: Any,
    missing: str,
) -> Any:
    """Bars of `value` per date coloured by `status`, each labelled with its value, and
    `missing` where the mart has none."""
    rows = [
        {
            "game_date": day["game_date"].isoformat(),
            value: day.get(value) if day.get(value) is not None else 0.0,
            "status": status(day),
            "label": f"{day[value]:g}" if day.get(value) is not None else missing,
        }
        for day in days
    ]
    dates = [day["game_date"].isoformat() for day in days]
    base = alt.Chart(alt.Data(values=rows)).encode(x=_x(alt, dates), y=y)
    bars = base.transform_filter(f"datum.label != '{missing}'").mark_bar().encode(color=colour)
    labels = base.mark_text(baseline="bottom", dy=-2, fontSize=10, color="#1d2330").encode(
        text="label:N"
    )
    return bars + labels


def _size(chart: Any) -> Any:
    return chart.properties(width=_WIDTH, height=_HEIGHT)


def _level(name: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda day: day.get(name) or "ok"


def _phase4(day: Mapping[str, Any]) -> str:
    if day.get("is_critical"):
        return "critical"
    return "ready" if day.get("is_ready") else "not ready"


def build_charts(data: ReportData) -> dict[str, str]:
    """Each chart of :data:`CHARTS` as inline SVG."""
    import altair as alt

    dates = [day.isoformat() for day in data.dates]
    days = data.days
    levels = {k: _LEVEL_COLOURS[k] for k in ("ok", "warning", "critical")}

    rule, title = _threshold_lines(
        alt, (d.get("coverage_warning_pct") for d in days), label="coverage warning", unit=" %"
    )
    coverage = (_bar_chart(
        alt, days, "coverage_pct", _level("alert_level"), missing="no players",
        y=alt.Y("coverage_pct:Q", title="coverage %", scale=alt.Scale(domain=[0, 100])),
        colour=_colour(alt, "status", "coverage level", levels),
    ) + rule).properties(title=title)  # fmt: skip

    rule, title = _threshold_lines(
        alt, (d.get("ready_pct_threshold") for d in days), label="ready threshold", unit=" %"
    )
    readiness = (_bar_chart(
        alt, days, "ready_pct", _phase4, missing="no players",
        y=alt.Y("ready_pct:Q", title="players ready, % of expected",
                scale=alt.Scale(domain=[0, 100])),
        colour=_colour(alt, "status", "Phase 4", _READY_COLOURS),
    ) + rule).properties(title=title)  # fmt: skip

    rule, title = _threshold_lines(
        alt, (d.get("latency_warning_minutes") for d in days), label="latency warning",
        unit=" min",
    )  # fmt: skip
    latency = (_bar_chart(
        alt, days, "minutes_to_first_request", _level("latency_alert_level"),
        missing="no request",
        y=alt.Y("minutes_to_first_request:Q", title="minutes to the first request"),
        colour=_colour(alt, "status", "latency level", levels),
    ) + rule).properties(title=title)  # fmt: skip

    sources = [
        {"game_date": d["game_date"].isoformat(),
         "source": d.get("first_trigger_source") or "none"}
        for d in days
    ]  # fmt: skip
    present = [s for s in _SOURCE_COLOURS if any(r["source"] == s for r in sources)]
    present += sorted({r["source"] for r in sources} - set(_SOURCE_COLOURS))
    trigger_source = (
        alt.Chart(alt.Data(values=sources))
        .mark_square(size=180, opacity=1)
        .encode(
            x=_x(alt, dates),
            y=alt.Y("source:N", title="first trigger source", sort=present),
            color=_colour(alt, "source", "trigger source", {
                s: _SOURCE_COLOURS.get(s, "#7f7f7f") for s in present
            }),
        )
        .properties(width=_WIDTH, height=max(40, 32 * len(present)))
    )  # fmt: skip

    series = ("warning", "critical", "resolved")
    alert_rows = [
        {"game_date": r["game_date"].isoformat(), "series": r["series"], "alerts": r["alerts"]}
        for r in data.alerts
    ]
    alerts = (
        alt.Chart(alt.Data(values=alert_rows))
        .mark_bar()
        .encode(
            x=_x(alt, dates),
            y=alt.Y("sum(alerts):Q", title="alerts sent", axis=alt.Axis(tickMinStep=1)),
            color=_colour(alt, "series", "level", {
                s: _LEVEL_COLOURS.get(s, "#7f7f7f")
                for s in [*series, *sorted({r["series"] for r in alert_rows} - set(series))]
            }),
            order=alt.Order("series:N"),
        )
    )  # fmt: skip

    charts = {
        "coverage": _size(coverage),
        "readiness": _size(readiness),
        "latency": _size(latency),
        "trigger_source": trigger_source,
        "alerts": _size(alerts),
    }
    return _render_svgs(charts)


# -- the page -------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0; padding: 24px 32px; color: #1d2330; background: #ffffff; }
header { border-bottom: 2px solid #1d2330; margin-bottom: 16px; padding-bottom: 8px; }
h1 { margin: 0 0 4px 0; font-size: 26px; }
h2 { font-size: 18px; margin: 28px 0 6px 0; }
.meta { color: #4a5568; margin: 2px 0; }
.figures { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 12px; }
.figure { border: 1px solid #d5dbe3; border-radius: 6px; padding: 8px 12px; min-width: 120px;
          background: #f7f9fc; }
.figure .value { font-size: 22px; font-weight: 600; }
.figure .label { font-size: 12px; color: #4a5568; }
.level-ok { color: #2e7d32; } .level-warning { color: #b7791f; }
.level-critical { color: #c62828; }
figure.chart { margin: 0; }
figure.chart figcaption { color: #4a5568; font-size: 13px; margin: 2px 0 6px 0; }
table { border-collapse: collapse; font-size: 13px; margin-top: 6px; }
th, td { border: 1px solid #d5dbe3; padding: 3px 8px; text-align: left; }
th { background: #eef2f7; }
.empty { font-size: 18px; padding: 24px; border: 1px dashed #a0aec0; border-radius: 6px; }
"""


def _e(value: Any) -> str:
    """A value as escaped HTML text ("-" for none)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return html.escape(f"{value:g}")
    if isinstance(value, dt.datetime):
        return html.escape(value.strftime("%Y-%m-%d %H:%M UTC"))
    return html.escape(str(value), quote=True)


def _figure(label: str, value: Any, *, unit: str = "", level: str | None = None) -> str:
    css = f' class="value level-{_e(level)}"' if level else ' class="value"'
    shown = _e(value) + (html.escape(unit) if value is not None else "")
    return (
        f'<div class="figure"><div{css}>{shown}</div>'
        f'<div class="label">{html.escape(label)}</div></div>'
    )


def _headline(day: Mapping[str, Any]) -> str:
    expected = day.get("players_expected")
    figures = [
        _figure("players expected", expected),
        _figure("Phase 4 ready", day.get("players_ready"),
                unit=f" ({_e(day.get('ready_pct'))} %)" if day.get("ready_pct") is not None
                else ""),
        _figure("predicted", day.get("players_predicted")),
        _figure("coverage", day.get("coverage_pct"), unit=" %", level=day.get("alert_level")),
        _figure("in flight", day.get("players_in_flight")),
        _figure("pending", day.get("players_pending")),
        _figure("missing", day.get("players_missing")),
        _figure("minutes to first request", day.get("minutes_to_first_request"),
                level=day.get("latency_alert_level")),
        _figure("first trigger", day.get("first_trigger_source")),
        _figure("SLA met (07:00 PT)", day.get("is_sla_met")),
        _figure("alerts sent", day.get("alerts_sent")),
    ]  # fmt: skip
    return '<div class="figures" id="headline">' + "".join(figures) + "</div>"


_CAPTIONS = {
    "coverage": "Players predicted by every required system, % of expected; the dashed"
    " line is the mart's coverage warning threshold (coverage_warning_pct).",
    "readiness": "Expected players with production-ready Phase 4 features; the dashed"
    " line is the mart's ready_pct_threshold (a date is also ready at ready_count_threshold"
    " players).",
    "latency": "From phase4_ready_at to the first acknowledged request; the dashed line is"
    " the mart's latency_warning_minutes. No bar: no request yet.",
    "trigger_source": "The trigger source of each date's first acknowledged request"
    " (none: no request).",
    "alerts": "Rows of alert_log with status sent (one per alert and channel); resolved"
    " notices apart.",
}


def _missing_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return '<p class="meta" id="not-predicted-none">Every expected player is predicted.</p>'
    columns = [
        ("player_lookup", "player"), ("team_abbr", "team"), ("opponent_team_abbr", "opponent"),
        ("state", "state"), ("reason", "reason"), ("systems_predicted", "systems predicted"),
        ("request_attempts", "requests"),
    ]  # fmt: skip
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = "".join(
        f'<tr class="state-{_e(row.get("state"))}">'
        + "".join(f"<td>{_e(row.get(name))}</td>" for name, _ in columns)
        + "</tr>"
        for row in rows
    )
    return f'<table id="not-predicted"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _made_at(now: dt.datetime) -> str:
    local = now.astimezone(PACIFIC)
    return f"{now:%Y-%m-%d %H:%M} UTC ({local:%Y-%m-%d %H:%M %Z})"


def render(data: ReportData, *, now: dt.datetime) -> Report:
    """The page for the gathered data (charts only when there is a game day)."""
    title = "Phase 4 → Phase 5 dispatch report"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<header><h1>{html.escape(title)}</h1>",
    ]
    latest = data.latest
    charts: dict[str, str] = {}
    if latest is None:
        parts.append(
            f'<p class="meta" id="range">No game day up to {_e(data.searched_until)}.</p>'
            f'<p class="meta" id="made-at">Made {_e(_made_at(now))}.</p></header>'
            f'<p class="empty" id="no-game-days">No game day in the warehouse up to'
            f" {_e(data.searched_until)}: nothing to report yet. Run the dispatcher (or"
            " <code>dispatcher demo</code>) and make the report again.</p>"
        )
    else:
        first, last = data.dates[0], data.dates[-1]
        parts.append(
            f'<p class="meta" id="range">{len(data.dates)} game day'
            f"{'s' if len(data.dates) != 1 else ''}, {_e(first)} to {_e(last)}.</p>"
            f'<p class="meta" id="made-at">Made {_e(_made_at(now))}.</p>'
            f'<h2 id="latest">Latest game day: {_e(last)}</h2>{_headline(latest)}</header>'
        )
        charts = build_charts(data)
        for name, svg in charts.items():
            parts.append(
                f'<section><h2 id="title-{name}">{html.escape(CHARTS[name])}</h2>'
                f'<figure class="chart" id="chart-{name}" data-chart="{name}"'
                f' aria-labelledby="title-{name}"><figcaption>{html.escape(_CAPTIONS[name])}'
                f"</figcaption>{svg}</figure></section>"
            )
        if not data.alerts:
            parts.append('<p class="meta" id="no-alerts">No alert was sent on these dates.</p>')
        parts.append(
            f'<section><h2 id="title-not-predicted">Players not predicted on {_e(last)}'
            f" ({len(data.not_predicted)})</h2>{_missing_table(data.not_predicted)}</section>"
        )
    parts.append("</body></html>")
    summary = ReportSummary(
        dates=data.dates,
        charts=tuple(charts),
        players_not_predicted=len(data.not_predicted),
        made_at=now,
    )
    return Report(html="\n".join(parts), summary=summary, data=data)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def build_report(
    warehouse: Warehouse,
    *,
    days: int = 30,
    end: dt.date | None = None,
    now: dt.datetime | None = None,
) -> Report:
    """The report of the last `days` game days up to `end` (see the module docstring);
    `now` (aware; default the clock) is when it says it was made and decides "today"."""
    now = (now or _utc_now()).astimezone(dt.UTC)
    data = gather(warehouse, days=days, end=end, today=now.astimezone(PACIFIC).date())
    return render(data, now=now)


def write_atomically(path: Path, text: str) -> None:
    """Write the whole file or nothing: a temporary file beside it, then a rename."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ReportError(f"cannot write the report to {path}: no directory {directory}")
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_report(
    settings: Settings,
    *,
    days: int = 30,
    out: Path = Path("report.html"),
    end: dt.date | None = None,
    now: dt.datetime | None = None,
) -> ReportSummary:
    """Build the report from the settings' warehouse and write it to `out` atomically."""
    out = Path(out)
    warehouse = connect(settings)
    try:
        report = build_report(warehouse, days=days, end=end, now=now)
    finally:
        warehouse.close()
    write_atomically(out, report.html)
    return ReportSummary(
        dates=report.summary.dates,
        charts=report.summary.charts,
        players_not_predicted=report.summary.players_not_predicted,
        made_at=report.summary.made_at,
        out=out,
    )
