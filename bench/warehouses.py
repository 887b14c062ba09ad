"""The warehouses the rows dispatch from: sample slates written with
``dispatcher.sandbox.load``, then dbt, each build in a child process of its own.

A child keeps dbt's global state, the slate generator's memory (the history peaks near
600 MB) and its CPU out of the process that measures; builds run side by side, at most
one per usable CPU, and all of them finish before any row is measured. The child is
``python -m bench.warehouses JOB.json``; :class:`Builds` starts, waits for and, if the
bench stops first, kills them (by PID, each in its own process group).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .config import (
    HISTORY_BUDGET_SECONDS,
    HISTORY_PLAYERS_PER_TEAM,
    HISTORY_SEASON_DATES,
    HISTORY_TEAMS,
    PLAYERS_PENDING,
    PROJECT,
    ROOT,
    history_seasons,
    history_spec,
    slate_spec,
)
from .infra import BenchError, progress

BUILD_TIMEOUT_SECONDS = 1800.0


# --- settings and clients -----------------------------------------------------------------


def settings_for(path: Path):
    """A DuckDB warehouse file, published to the Pub/Sub emulator."""
    from dispatcher.config import Settings

    return Settings(
        duckdb_path=path,
        transport="pubsub",
        gcp_project=PROJECT,
        dbt_target_path=path.parent / "target",
    )


def bigquery_settings(endpoint: str, target_path: Path):
    """The BigQuery API emulator, published to the Pub/Sub emulator."""
    from dispatcher.config import Settings

    return Settings(
        warehouse="bigquery",
        gcp_project=PROJECT,
        bigquery_api_endpoint=endpoint,
        transport="pubsub",
        dbt_target_path=target_path,
    )


@contextlib.contextmanager
def bigquery_client(endpoint: str) -> Iterator[Any]:
    """A google-cloud-bigquery client on the emulator (as tests/conftest.py makes one)."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoint),
    )
    try:
        yield client
    finally:
        client.close()


# --- the builds (run in the child) --------------------------------------------------------


def build_duckdb(path: Path, dates: Sequence[dt.date]) -> list[str]:
    """Sample slates (450 pending each) for the dates in one DuckDB file, then dbt build."""
    from dispatcher import dbt
    from dispatcher.sandbox.load import write_duckdb
    from dispatcher.sandbox.slate import generate_slate

    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_duckdb(path, (generate_slate(slate_spec(day)) for day in dates))
    wrote = time.perf_counter() - started
    dbt.build(settings_for(path))
    took = time.perf_counter() - started - wrote
    return [
        f"{len(dates)} date(s) written in {wrote:.1f} s, dbt build {took:.1f} s, "
        f"{path.stat().st_size / 1e6:.0f} MB"
    ]


#: One published request per historical player (what the dispatcher would have left in the
#: ledger after dispatching those dates): attempt 1, claimed 08:31 UTC, acked 200 ms later.
_HISTORY_LEDGER = """
insert into nba_orchestration.request_ledger (
    request_id, game_date, player_lookup, game_id, attempt, batch_id, trigger_source,
    claimed_at, published_at, message_id
)
select
    strftime(game_date, '%Y-%m-%d') || '/' || player_lookup || '/1',
    game_date, player_lookup, game_id, 1,
    md5(strftime(game_date, '%Y-%m-%d')), 'pubsub',
    cast(game_date as timestamp) + interval 511 minute,
    cast(game_date as timestamp) + interval 511 minute + interval 200 millisecond,
    cast(hash(game_date, player_lookup) as varchar)
from nba_analytics.upcoming_player_game_context
where game_date < ?
"""

_HISTORY_COUNTS = (
    ("context", "nba_analytics.upcoming_player_game_context"),
    ("features", "nba_predictions.ml_feature_store_v2"),
    ("predictions", "nba_predictions.player_prop_predictions"),
    ("ledger", "nba_orchestration.request_ledger"),
)


def build_history(path: Path, target: dt.date, seasons: int) -> list[str]:
    """Row 6's warehouse: the target date's slate (450 pending, as in rows 1/2) after
    `seasons` seasons of fully predicted history, written season by season (a generator
    of slates, so one season's rows at most are in memory), one dbt build, then the
    history's request ledger. Stops adding seasons when generating would pass
    HISTORY_BUDGET_SECONDS. Returns notes with the actual row counts and states."""
    import duckdb

    from dispatcher import dbt
    from dispatcher.sandbox.load import write_duckdb
    from dispatcher.sandbox.slate import generate_slate
    from dispatcher.warehouse import DISPATCH_STATE

    path.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    started = time.perf_counter()
    write_duckdb(path, generate_slate(slate_spec(target)))
    all_seasons = history_seasons(seasons)
    written = 0
    for number, dates in enumerate(all_seasons, start=1):
        write_duckdb(path, (generate_slate(history_spec(day)) for day in dates))
        written += 1
        spent = time.perf_counter() - started
        progress(f"history: season {number}/{seasons} ({dates[0]}…) written, {spent:.0f} s")
        if number < seasons and spent + spent / number > HISTORY_BUDGET_SECONDS:
            notes.append(
                f"history CUT to {written} of {seasons} seasons: another would pass the "
                f"{HISTORY_BUDGET_SECONDS:.0f} s generation budget"
            )
            break
    wrote = time.perf_counter() - started
    dbt.build(settings_for(path))
    took = time.perf_counter() - started - wrote
    with duckdb.connect(str(path)) as con:
        con.execute(_HISTORY_LEDGER, [target])
        counts = {
            name: con.execute(f"select count(*), count(distinct game_date) from {table}").fetchone()
            for name, table in _HISTORY_COUNTS
        }
        states = dict(
            con.execute(
                f"select state, count(*) from {DISPATCH_STATE} group by state order by state"
            ).fetchall()
        )
    history_dates = counts["context"][1] - 1
    predicted = history_dates * HISTORY_TEAMS * HISTORY_PLAYERS_PER_TEAM
    if states.get("predicted") != predicted or states.get("pending") != PLAYERS_PENDING:
        raise BenchError(f"history warehouse states {states}, expected {predicted} "
                         f"predicted and {PLAYERS_PENDING} pending")  # fmt: skip
    notes.append(
        f"history warehouse: {history_dates} history dates ({written} season(s) × "
        f"{HISTORY_SEASON_DATES}, from {all_seasons[0][0]}) + the target date {target}; rows: "
        + ", ".join(f"{name} {n:,}" for name, (n, _) in counts.items())
        + f"; states: {', '.join(f'{k} {v:,}' for k, v in states.items())}; "
        f"{path.stat().st_size / 1e6:.0f} MB; generated and written in {wrote:.0f} s, "
        f"dbt build {took:.0f} s"
    )
    return notes


def write_pending_slate(client: Any, slate: Any) -> None:
    """(Re)write a slate on the BigQuery emulator, its ledger rows included: the date's
    claims of an earlier run are deleted, so everyone is pending again."""
    from dispatcher.sandbox.load import write_bigquery

    write_bigquery(client, PROJECT, slate, include_ledger=True)


def build_bigquery(endpoint: str, target_path: Path, game_date: dt.date) -> list[str]:
    """Row 8's warehouse: the one-date slate on the BigQuery API emulator, then `dbt run`
    (the models only: dbt's tests on the emulator take a minute and check nothing the
    bench does not check itself: 450 pending), then the ledger state of the slate."""
    from dispatcher import dbt, marts
    from dispatcher.sandbox.load import write_bigquery
    from dispatcher.sandbox.slate import generate_slate
    from dispatcher.warehouse import connect

    settings = bigquery_settings(endpoint, target_path)
    slate = generate_slate(slate_spec(game_date))
    started = time.perf_counter()
    with bigquery_client(endpoint) as client:
        write_bigquery(client, PROJECT, slate)
        wrote = time.perf_counter() - started
        dbt.run_dbt(settings, ["run"])
        took = time.perf_counter() - started - wrote
        write_pending_slate(client, slate)
    wh = connect(settings)
    try:
        pending = len(marts.pending(wh, game_date))
        coverage = marts.coverage(wh, game_date) or {}
    finally:
        wh.close()
    if pending != PLAYERS_PENDING or coverage.get("players_pending") != PLAYERS_PENDING:
        raise BenchError(f"BigQuery emulator: {pending} pending rows, coverage {coverage}")
    return [
        f"BigQuery emulator: one date written in {wrote:.1f} s, dbt run {took:.1f} s; "
        f"{pending} pending"
    ]


def _build(job: dict[str, Any]) -> list[str]:
    kind = job["kind"]
    if kind == "duckdb":
        return build_duckdb(Path(job["path"]), [dt.date.fromisoformat(d) for d in job["dates"]])
    if kind == "history":
        return build_history(
            Path(job["path"]), dt.date.fromisoformat(job["target"]), int(job["seasons"])
        )
    if kind == "bigquery":
        return build_bigquery(
            job["endpoint"], Path(job["target_path"]), dt.date.fromisoformat(job["game_date"])
        )
    raise BenchError(f"unknown build kind {kind!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """The child: run the job of a JSON file, write its notes to the job's result file."""
    job_path = Path((argv if argv is not None else sys.argv[1:])[0])
    job = json.loads(job_path.read_text())
    notes = _build(job)
    Path(job["result"]).write_text(json.dumps({"notes": notes}))
    return 0


# --- the builds (started by the bench) ----------------------------------------------------


class Builds:
    """Warehouse builds in child processes, at most `slots` at a time.

    ``submit`` queues one; ``wait`` returns every build's notes once all are done (the
    first failure raises BenchError); ``close`` kills the children still running, each
    by its own PID (process group), and drops the queued ones.
    """

    def __init__(self, workdir: Path, slots: int) -> None:
        self.directory = workdir / "builds"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=max(1, slots), thread_name_prefix="build")
        self._futures: dict[str, Future] = {}
        self._running: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, name: str, kind: str, **job: Any) -> None:
        job = {"kind": kind, **{k: _jsonable(v) for k, v in job.items()}}
        self._futures[name] = self._executor.submit(self._run, name, job)

    def _run(self, name: str, job: dict[str, Any]) -> list[str]:
        job_path = self.directory / f"{name}.json"
        result = self.directory / f"{name}.result.json"
        log_path = self.directory / f"{name}.log"
        job_path.write_text(json.dumps({**job, "result": str(result)}))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
        )}  # fmt: skip
        started = time.perf_counter()
        with log_path.open("w") as log, self._lock:
            if self._closed:
                raise BenchError(f"build {name}: the bench stopped first")
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.warehouses", str(job_path)],
                cwd=self.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,  # dbt's output; tracebacks and progress go to our stderr
                start_new_session=True,
            )
            self._running[name] = process
        progress(f"build {name}: started (pid {process.pid})")
        try:
            code = process.wait(timeout=BUILD_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with self._lock:
                self._running.pop(name, None)
        if code != 0 or not result.exists():
            self._kill(process)
            reason = "timed out" if code is None else f"exited {code}"
            raise BenchError(f"build {name} {reason}; output in {log_path}:\n"
                             + "\n".join(log_path.read_text().splitlines()[-30:]))  # fmt: skip
        notes = json.loads(result.read_text())["notes"]
        progress(f"build {name}: done in {time.perf_counter() - started:.0f} s: {notes[-1]}")
        return notes

    def wait(self) -> dict[str, list[str]]:
        return {name: future.result() for name, future in self._futures.items()}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            running = list(self._running.values())
        for process in running:
            self._kill(process)
        self._executor.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _kill(process: subprocess.Popen) -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date | Path):
        return str(value) if isinstance(value, Path) else value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
