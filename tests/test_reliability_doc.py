"""docs/RELIABILITY.md is what `python -m bench.reliability` wrote from the suites'
figures: the renderer shows every figure recorded, and the document on disk is one of
its outputs, from a run of the suites that exist."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(ROOT))

from bench import reliability  # noqa: E402


def test_the_headline_adds_up_what_the_suites_recorded():
    figures = [
        {"suite": "schedules", "backend": "duckdb", "schedules": 1000, "duplicates": 0},
        {"suite": "schedules", "backend": "pubsub-emulator", "schedules": 50, "lost": 0},
        {"suite": "fuzz", "inputs": 10000, "answered": {"400": 9000, "413": 1000}},
        {"suite": "faults", "fault": "sigkill_after_claim", "healed_after_seconds": 6.5},
        {"suite": "load", "clients": 8, "seconds": 60, "requests": 300, "p99_ms": 4100,
         "errors_5xx": 0, "lost": 1, "duplicated": 2},
        {"suite": "something_new", "n": 3},
    ]  # fmt: skip
    text = reliability.render(figures, 600.0, "python -m bench.reliability")

    assert text.startswith("# Reliability\n")
    assert "- schedules run: 1050; duckdb: 1000; pubsub-emulator: 50" in text
    assert "- malformed inputs fuzzed: 10000" in text
    assert "- faults injected: 1" in text
    assert "- load held: 8 clients for 60 s, 300 requests, p99 4100 ms" in text
    # A loss anywhere reaches the headline: the document cannot hide one.
    assert "- requests lost: 1; duplicated: 2" in text
    assert "| 400 9000, 413 1000 |" in text
    assert "## something_new" in text  # a suite without a section still shows


def test_the_document_is_the_output_of_the_command_over_suites_that_exist():
    for suite in reliability.SUITES:
        assert (ROOT / suite).is_file(), suite
    text = (ROOT / "docs" / "RELIABILITY.md").read_text()
    assert text.startswith("# Reliability\n")
    assert "python -m bench.reliability" in text
    assert "- requests lost: 0; duplicated: 0" in text
    for title, _ in reliability.SECTIONS.values():
        assert f"\n## {title}\n" in text, title
    assert "(no figures recorded)" not in text
