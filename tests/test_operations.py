"""docs/OPERATIONS.md works: every `$ dispatcher …` line of its console blocks runs, with
the installed CLI, against a warehouse in the state its section names
(`<!-- runbook-slate: NAME -->`), and exits as the line says (`# exit N`, else 0).
Lines of one section run in order on one warehouse, as the engineer would run them."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from warehouses import build_template, copy_of

from dispatcher.sandbox.slate import SlateSpec

RUNBOOK = Path(__file__).resolve().parent.parent / "docs" / "OPERATIONS.md"
BIN = Path(sys.executable).parent
DAY = dt.date(2026, 11, 28)
EVE = dt.date(2026, 11, 27)

#: The states the runbook's sections start from.
SLATES = {
    # Phase 4 made a tenth of the players ready: under the critical floor.
    "critical": [SlateSpec(game_date=DAY, share_production_ready=0.1, seed=21)],
    # Phase 4 is ready, some players predicted, some in flight, the rest pending.
    "partial": [
        SlateSpec(game_date=day, share_production_ready=0.9, share_predicted=0.4,
                  share_in_flight=0.1, seed=22 + n)
        for n, day in enumerate((EVE, DAY))
    ],  # fmt: skip
}


@dataclass(frozen=True)
class Step:
    slate: str
    line: int
    command: str
    exit_code: int


def _steps() -> list[tuple[str, list[Step]]]:
    """The runbook's sections, as (slate, steps) in document order."""
    sections: list[tuple[str, list[Step]]] = []
    slate, in_console = None, False
    for number, text in enumerate(RUNBOOK.read_text().splitlines(), start=1):
        marker = re.fullmatch(r"\s*<!-- runbook-slate: (\w+) -->\s*", text)
        if marker:
            slate = marker.group(1)
            assert slate in SLATES, f"OPERATIONS.md:{number}: unknown slate {slate}"
            sections.append((slate, []))
            continue
        fence = text.strip()
        if fence.startswith("```"):
            in_console = fence == "```console" and not in_console
            if in_console:
                assert sections, f"OPERATIONS.md:{number}: a console block before any slate"
            continue
        if in_console:
            assert text.strip().startswith("$ "), f"OPERATIONS.md:{number}: not a command"
            command, _, comment = text.strip()[2:].partition("#")
            expected = re.match(r"\s*exit (\d+)", comment)
            sections[-1][1].append(
                Step(sections[-1][0], number, command.strip(),
                     int(expected.group(1)) if expected else 0)
            )  # fmt: skip
    return [(slate, steps) for slate, steps in sections if steps]


SECTIONS = _steps()


def test_the_runbook_has_commands_for_every_section():
    assert len(SECTIONS) >= 6
    commands = [step.command for _, steps in SECTIONS for step in steps]
    assert all(command.split()[0] == "dispatcher" or "dispatcher " in command
               for command in commands)  # fmt: skip
    for needed in ("status", "plan", "trigger", "retry", "backfill", "config", "start"):
        assert any(f"dispatcher {needed}" in command for command in commands), needed


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name, specs in SLATES.items():
        out[name] = build_template(tmp_path_factory.mktemp(f"runbook-{name}"), specs)
    return out


@pytest.mark.parametrize(
    "section", SECTIONS, ids=[f"{slate}-line{steps[0].line}" for slate, steps in SECTIONS]
)
def test_each_section_runs_as_written(section, templates, tmp_path):
    slate, steps = section
    settings = copy_of(templates[slate], tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "DISPATCHER_DUCKDB_PATH": str(settings.duckdb_path),
        "DISPATCHER_DBT_TARGET_PATH": str(settings.dbt_target_path),
        "DISPATCHER_LOG_FORMAT": "json",
    })  # fmt: skip
    for step in steps:
        out = subprocess.run(
            ["bash", "-c", step.command], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert out.returncode == step.exit_code, (
            f"OPERATIONS.md:{step.line}: `{step.command}` exited {out.returncode},"
            f" the runbook says {step.exit_code}\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}"
        )
        assert out.stdout.strip(), f"OPERATIONS.md:{step.line}: `{step.command}` printed nothing"
