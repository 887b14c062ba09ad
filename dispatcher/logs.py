"""Logs on stderr: JSON lines for machines (as Cloud Logging parses them), or one short
readable line for a person at a terminal; and a transient progress line for that person.

The front end configures the module once (:func:`configure`; the CLI does it from
``--log-format``, ``-q`` and ``-v``); the library only calls :func:`log` and
:func:`progress` and never knows who is watching. Unconfigured, every line is JSON.

- ``json``: every entry, one JSON object a line (``-q``: errors only).
- ``text``: warnings and errors (``-v``: every entry; ``-q``: errors only), one line each:
  ``warning: <message> (key=value, ...)``.
- ``auto``: ``text`` when the stream is a terminal, else ``json``.

Progress lines are shown only on a terminal, in the text format and not quiet; they are
rewritten in place and cleared before any log line or by :func:`progress_done`.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import threading
from dataclasses import dataclass
from typing import Any, TextIO

FORMATS = ("auto", "json", "text")

#: Cloud Logging's severities, in order; unknown ones rank as INFO.
_RANK = {
    "DEBUG": 100, "INFO": 200, "NOTICE": 300, "WARNING": 400, "ERROR": 500,
    "CRITICAL": 600, "ALERT": 700, "EMERGENCY": 800,
}  # fmt: skip
#: A text line longer than this is cut (the JSON format has every field).
TEXT_WIDTH = 300
_CLEAR = "\r\x1b[K"


@dataclass(frozen=True)
class LogConfig:
    """How entries are written: ``format`` one of FORMATS; ``quiet`` keeps errors only
    and no progress; ``verbose`` shows every entry in the text format too."""

    format: str = "json"
    quiet: bool = False
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {self.format!r}")


_config = LogConfig()
_lock = threading.Lock()
#: The progress line on screen, per stream (so a log line can clear and redraw it).
_shown: dict[int, tuple[TextIO, str]] = {}


def configure(config: LogConfig) -> LogConfig:
    """Use ``config`` from now on (for the whole process); return the one it replaces."""
    global _config
    with _lock:
        previous, _config = _config, config
    return previous


def current() -> LogConfig:
    return _config


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _format(stream: TextIO) -> str:
    if _config.format != "auto":
        return _config.format
    return "text" if _isatty(stream) else "json"


def shows_progress(stream: TextIO | None = None) -> bool:
    """Whether progress lines reach a person: a terminal, the text format, not quiet."""
    stream = stream or sys.stderr
    return not _config.quiet and _format(stream) == "text" and _isatty(stream)


def _text_line(entry: dict[str, Any]) -> str:
    message = " ".join(str(entry["message"]).split())
    fields = [
        f"{key}={value}"
        for key, value in entry.items()
        if key not in ("severity", "message", "time") and isinstance(value, str | int | float)
    ]
    line = f"{entry['severity'].lower()}: {message}"
    if fields:
        line += f" ({', '.join(fields)})"
    return line if len(line) <= TEXT_WIDTH else line[: TEXT_WIDTH - 3] + "..."


def log(severity: str, message: str, *, stream: TextIO | None = None, **fields: Any) -> None:
    """One log entry: ``severity`` (INFO, WARNING, ERROR, ...), a message and fields
    (None values are left out), written as the configuration says."""
    out = stream or sys.stderr
    severity = severity.upper()
    fmt = _format(out)
    rank = _RANK.get(severity, _RANK["INFO"])
    if _config.quiet:
        if rank < _RANK["ERROR"]:
            return
    elif fmt == "text" and not _config.verbose and rank < _RANK["WARNING"]:
        return
    entry = {
        "severity": severity,
        "message": message,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        **{key: value for key, value in fields.items() if value is not None},
    }
    line = json.dumps(entry, default=str) if fmt == "json" else _text_line(entry)
    with _lock:
        shown = _shown.get(id(out))
        if shown is not None:
            out.write(_CLEAR)
        print(line, file=out, flush=True)
        if shown is not None:  # the progress line goes on below the log line
            out.write(shown[1])
            out.flush()


def progress(text: str, *, stream: TextIO | None = None) -> None:
    """Show ``text`` as the progress line (replacing the previous one) if a person is
    watching (:func:`shows_progress`); else nothing."""
    out = stream or sys.stderr
    if not shows_progress(out):
        return
    width = max(shutil.get_terminal_size((80, 24)).columns - 1, 20)
    line = text.replace("\r", " ").replace("\n", " ").rstrip()[:width]
    with _lock:
        out.write(_CLEAR + line)
        out.flush()
        _shown[id(out)] = (out, line)


def progress_done(*, stream: TextIO | None = None) -> None:
    """Clear the progress line, if one is shown."""
    out = stream or sys.stderr
    with _lock:
        if _shown.pop(id(out), None) is not None:
            out.write(_CLEAR)
            out.flush()
