"""--profile: cProfile of an in-process call, `-X importtime` of a CLI process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def import_time_summary(stderr: str, top: int = 8) -> str:
    """The slowest top-level imports from `python -X importtime` output (cumulative)."""
    entries = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2]
        if name.startswith("  "):  # nested import: counted in its parent's cumulative
            continue
        entries.append((int(parts[1]), name.strip()))
    entries.sort(reverse=True)
    total = sum(us for us, _ in entries)
    lines = [f"top-level imports, cumulative: {total / 1e6:.2f} s in all"]
    lines += [f"  {us / 1e6:6.3f} s  {name}" for us, name in entries[:top]]
    return "\n".join(lines)


def cprofile_text(func: Callable[[], Any], top: int = 15) -> str:
    """The `top` functions of one call by own time (pstats, without its preamble)."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        func()
    finally:
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    start = text.find("   ncalls")
    return text[start:].rstrip() if start >= 0 else text.rstrip()
