"""The figures the reliability suites produce, for docs/RELIABILITY.md.

A suite calls ``record(suite, **figures)`` once its invariants held. With the
environment variable DISPATCHER_RELIABILITY_FIGURES naming a file, each call appends
one JSON line there; without it, nothing is written (a plain ``pytest`` run).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

FIGURES_ENV = "DISPATCHER_RELIABILITY_FIGURES"


def record(suite: str, **figures: Any) -> None:
    """Append ``{"suite": suite, **figures}`` to the figures file, when one is named."""
    path = os.environ.get(FIGURES_ENV)
    if not path:
        return
    line = json.dumps({"suite": suite, **figures}, default=_plain, sort_keys=True)
    with Path(path).open("a", encoding="utf-8") as out:
        out.write(line + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
