"""The rows of the table: one module per row (or per concern), registered here with
what each needs built or started before it is measured."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..session import Session
from ..table import RowResult
from . import announce, backfill, bigquery, cli, help, history, load, plan, rss, trigger

#: What a row can need: the emulators, and the DuckDB warehouses by name.
PUBSUB, BIGQUERY = "pubsub", "bigquery"
ONE_DATE, BACKFILL, HISTORY, LOAD = "one-date", "backfill", "history", "load"


@dataclass(frozen=True)
class Row:
    number: int
    name: str
    #: Measured runs (the baseline gets as many): by default, and with --quick.
    runs_full: int
    runs_quick: int
    needs: frozenset[str]
    run: Callable[[Session], list[RowResult]]


ROWS: dict[int, Row] = {
    row.number: row
    for row in (
        Row(1, "trigger-450", 5, 2, frozenset({PUBSUB, ONE_DATE}), trigger.run),
        Row(2, "cli-trigger", 5, 3, frozenset({PUBSUB, ONE_DATE}), cli.run),
        Row(3, "backfill-45000", 3, 1, frozenset({PUBSUB, BACKFILL}), backfill.run),
        Row(4, "cli-help", 15, 5, frozenset(), help.run),
        Row(5, "cli-plan", 7, 3, frozenset({ONE_DATE}), plan.run),
        Row(6, "history-reads", 9, 5, frozenset({ONE_DATE, HISTORY}), history.run),
        Row(7, "backfill-rss", 3, 1, frozenset({PUBSUB, BACKFILL}), rss.run),
        Row(8, "bigquery-round-trips", 3, 1, frozenset({PUBSUB, BIGQUERY}), bigquery.run),
        Row(9, "announce-push", 5, 1, frozenset({PUBSUB, ONE_DATE}), announce.run_push),
        Row(10, "redelivery-storm", 2, 1, frozenset({ONE_DATE}), announce.run_storm),
    )
}

#: Rows run only when named (`--rows serve-load`), not by default nor with `all`: a
#: minute of load on its own (15 s with --quick), outside the table the suite checks.
OPT_IN_ROWS: dict[int, Row] = {
    row.number: row for row in (Row(11, "serve-load", 1, 1, frozenset({LOAD}), load.run),)
}
