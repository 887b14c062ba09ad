"""Results and how they are printed: the goals table, the samples, the per-stage tables
and the machine. Standard library only."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Units a row's samples can be in.
UNITS = ("s", "MB", "statements")


@dataclass
class RowResult:
    row: int
    title: str
    measured: list[float]
    baseline: list[float]
    baseline_label: str
    #: "speedup": baseline / measured >= goal; "ratio": measured / baseline <= goal;
    #: "absolute": measured <= goal (in the row's unit).
    goal_kind: str
    goal: float
    notes: list[str] = field(default_factory=list)
    #: "s" (seconds), "MB" (megabytes, e.g. a peak RSS) or "statements" (round trips).
    unit: str = "s"
    #: Shown instead of the row number when one row gives several lines (e.g. "6a").
    label: str | None = None

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unknown unit {self.unit!r}")
        if self.goal_kind not in ("speedup", "ratio", "absolute"):
            raise ValueError(f"unknown goal kind {self.goal_kind!r}")

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
    if unit == "statements":
        return f"{value:g} statement{'' if value == 1 else 's'}"
    if unit != "s":
        raise ValueError(f"unknown unit {unit!r}")
    return format_seconds(value)


TABLE_HEADER = "| row | measured (median of N runs) | baseline (same run) | ratio | goal | met? |"


def render_table(results: Sequence[RowResult]) -> str:
    lines = [TABLE_HEADER, "|---|---|---|---|---|---|"]
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


# --- where the time goes: one run's RunResult.stages ---------------------------------------


@dataclass
class StageRun:
    """One measured run: its wall time and what its RunResult.stages recorded."""

    wall_ms: float
    #: RunResult.stages.rounded(): milliseconds per stage.
    stages_ms: dict[str, float]
    #: RunResult.stages.round_trips(): warehouse statements before the first publish, in all.
    round_trips: dict[str, int | None]

    @classmethod
    def of(cls, wall_seconds: float, result: Any) -> StageRun:
        """A RunResult measured in-process for wall_seconds."""
        stages = result.stages
        return cls(wall_seconds * 1000, stages.rounded(), stages.round_trips())

    @classmethod
    def from_log(cls, entry: dict[str, Any]) -> StageRun:
        """A run's closing log line (a CLI process): its duration_ms is the wall time."""
        return cls(float(entry["duration_ms"]), entry["stages_ms"], entry["round_trips"])


OUTSIDE_STAGES = "outside the stages (open/close the warehouse, logging, the result)"


def render_stage_table(
    runs: Sequence[StageRun], *, per: str, per_part: tuple[str, int] | None = None
) -> str:
    """Mean milliseconds per stage over the runs, in the order the stages first ran, the
    rest of the wall time as one line, and the runs' warehouse round trips. `per_part`
    ("date", 100) adds a column of the mean divided by the parts (e.g. per date)."""
    if not runs:
        return "(no runs recorded)"
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(run.stages_ms))
    n = len(runs)
    wall = sum(run.wall_ms for run in runs) / n
    rows = [(name, sum(run.stages_ms.get(name, 0.0) for run in runs) / n) for name in names]
    rows.append((OUTSIDE_STAGES, wall - sum(ms for _, ms in rows)))
    header = f"| stage | mean ms/{per}"
    rule = "|---|---:"
    if per_part:
        header += f" | ms/{per_part[0]}"
        rule += "|---:"
    lines = [header + " | share |", rule + "|---:|"]

    def line(name: str, ms: float, bold: bool = False) -> str:
        cells = [name, f"{ms:.1f}"]
        if per_part:
            cells.append(f"{ms / per_part[1]:.2f}")
        cells.append(f"{100 * ms / wall:.1f} %" if wall else "–")
        if bold:
            cells = [f"**{cell}**" for cell in cells]
        return "| " + " | ".join(cells) + " |"

    lines += [line(name, ms) for name, ms in rows]
    lines.append(line(f"total per {per} (wall)", wall, bold=True))
    trips = sorted({_trips_text(run.round_trips) for run in runs})
    lines += ["", f"Warehouse round trips per {per}: {'; '.join(trips)} (N={n})."]
    return "\n".join(lines)


def stages_summary(runs: Sequence[StageRun]) -> str:
    """One line: the median ms of each stage over the runs, and their round trips."""
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(run.stages_ms))
    stages = ", ".join(
        f"{name} {statistics.median(run.stages_ms.get(name, 0.0) for run in runs):.0f} ms"
        for name in names
    )
    trips = "; ".join(sorted({_trips_text(run.round_trips) for run in runs}))
    return f"{stages or 'no stages'}; warehouse round trips: {trips}"


def _trips_text(round_trips: dict[str, int | None]) -> str:
    before = round_trips.get("before_publish")
    first = "no publish" if before is None else f"{before} before the first publish"
    return f"{first}, {round_trips.get('total')} in all"


# --- the machine --------------------------------------------------------------------------

LIBRARIES = (
    "duckdb",
    "google-cloud-pubsub",
    "google-cloud-bigquery",
    "dbt-core",
    "dbt-duckdb",
    "dbt-bigquery",
    "grpcio",
    "bqemulator",
)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_info() -> dict[str, str]:
    from importlib import metadata

    versions = []
    for package in LIBRARIES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    return {
        "cpus": f"{os.cpu_count()} ({usable_cpus()} usable by this process)",
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


def render_report(
    info: dict[str, str],
    results: Sequence[RowResult],
    sections: Sequence[tuple[str, str]] = (),
    footer: str | None = None,
) -> str:
    """The whole stdout report: machine, table, footer (the bench's wall time), samples,
    then each (heading, body) section (stage tables, profiles)."""
    parts = ["## Machine", "", render_machine(info), "", "## Results", "", render_table(results)]
    if footer:
        parts += ["", footer]
    parts += ["", "Samples and notes:", "", render_samples(results)]
    for heading, body in sections:
        parts += ["", heading, "", body]
    return "\n".join(parts)
