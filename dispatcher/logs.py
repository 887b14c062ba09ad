"""Structured logs: one JSON object per line on stderr, as Cloud Logging parses them."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any, TextIO


def log(severity: str, message: str, *, stream: TextIO | None = None, **fields: Any) -> None:
    entry = {
        "severity": severity.upper(),
        "message": message,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        **{key: value for key, value in fields.items() if value is not None},
    }
    print(json.dumps(entry, default=str), file=stream or sys.stderr, flush=True)
