"""The dbt project's vars, read from dbt_project.yml: the one home of every threshold
and knob. Python code that needs a rule the marts do not carry reads it here.

Marts compiled with ``--vars`` overrides carry their own thresholds in columns; a run
reads those, so this module is for code that runs before or beside the marts (the
sandbox's sample slate and reference worker).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from .config import DEFAULT_DBT_PROJECT_DIR


@functools.cache
def dbt_vars(project_dir: Path = DEFAULT_DBT_PROJECT_DIR) -> dict[str, Any]:
    """The ``vars:`` block of dbt_project.yml (a copy per call site is not needed)."""
    import yaml

    with open(Path(project_dir) / "dbt_project.yml", encoding="utf-8") as handle:
        project = yaml.safe_load(handle)
    return dict(project.get("vars") or {})


def required_systems(project_dir: Path = DEFAULT_DBT_PROJECT_DIR) -> tuple[str, ...]:
    """The prediction systems a player needs to count as predicted."""
    return tuple(dbt_vars(project_dir)["required_systems"])
