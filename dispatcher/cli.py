"""`dispatcher`: the command line. Thin commands over the library; heavy imports
(dbt, duckdb, google-cloud) happen inside the commands, not at start-up."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from . import __version__, logs

PACIFIC = ZoneInfo("America/Los_Angeles")
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "DISPATCHER"}


def today_pacific() -> dt.date:
    return dt.datetime.now(PACIFIC).date()


class GameDate(click.ParamType):
    """A date option: events.parse_game_date's rule (YYYY-MM-DD, a real calendar date,
    not before 2000 nor over two weeks after today in PT), the same for every command."""

    name = "YYYY-MM-DD"

    def convert(self, value, param, ctx):
        from .events import InvalidInput, parse_game_date

        option = param.opts[0] if param is not None and param.opts else "the date"
        try:
            return parse_game_date(value, today=today_pacific(), field=option)
        except InvalidInput as exc:
            self.fail(f"not a date the dispatcher takes: {exc}", param, ctx)


class SettingsError(click.ClickException):
    """Settings the dispatcher refuses: bad input (exit 2), one line, no usage text (the
    command line itself was fine; the environment is what to fix)."""

    exit_code = 2


def _settings():
    from .config import ConfigError, Settings

    try:
        settings = Settings.from_env()
        settings.check_combination()
    except ConfigError as exc:
        raise SettingsError(str(exc)) from exc
    return settings


class _OneLineErrors(click.Group):
    """Every error a command did not turn into a result is one line naming what to fix,
    exit 1; `-v/--verbose` shows the traceback instead."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:
            if ctx.meta.get("dispatcher.verbose"):
                raise
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise click.ClickException(
                f"{type(exc).__name__}: {detail[:400]} (-v for the traceback)"
            ) from exc


def _verbose(ctx: click.Context, _param, value: bool) -> bool:
    ctx.meta["dispatcher.verbose"] = value
    return value


@click.group(cls=_OneLineErrors, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="dispatcher")
@click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True,
              callback=_verbose,
              help="Show tracebacks of errors, and every log line in the text format.")  # fmt: skip
@click.option("--log-format", type=click.Choice(logs.FORMATS), default="auto",
              show_default=True, envvar="DISPATCHER_LOG_FORMAT",
              help="Logs on stderr: json lines; text, one short line per warning or error;"
                   " auto: text on a terminal, else json.")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True,
              help="No logs but errors, no progress: the summary only.")  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, log_format: str, quiet: bool) -> None:
    """Phase 4 -> Phase 5 dispatcher: request only the missing predictions."""
    verbose = bool(ctx.meta.get("dispatcher.verbose"))
    previous = logs.configure(logs.LogConfig(format=log_format, quiet=quiet, verbose=verbose))
    ctx.meta["dispatcher.quiet"] = quiet
    ctx.call_on_close(lambda: logs.configure(previous))


def _quiet() -> bool:
    return bool(click.get_current_context().meta.get("dispatcher.quiet"))


@cli.command()
@click.option(
    "--game-date",
    type=GameDate(),
    default=None,
    help="Game date (default: the next whose 07:00 PT deadline is ahead).",
)
@click.option("--transport", type=click.Choice(["local", "pubsub"]), default=None,
              help="Override DISPATCHER_TRANSPORT; pubsub needs PUBSUB_EMULATOR_HOST.")  # fmt: skip
@click.option("--overwrite", is_flag=True,
              help="Write into a warehouse file that holds data the demo did not write"
                   " (it replaces the date's inputs and ledger rows).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def demo(game_date: dt.date | None, transport: str | None, overwrite: bool, as_json: bool) -> None:
    """The whole loop on the embedded DuckDB: Phase 4 in two waves, the event, the
    worker, the retry, the status check at 100 %, the coverage and latency marts.
    Refuses a warehouse file holding data it did not write, unless --overwrite."""
    from .sandbox.demo import DemoError, run_demo

    settings = _settings()
    if transport:
        settings = settings.with_(transport=transport)
    echo = (lambda _line: None) if as_json else click.echo
    steps = (lambda _line: None) if as_json or _quiet() else click.echo
    try:
        result = run_demo(settings, game_date, echo=echo, steps=steps, overwrite=overwrite)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({
            "game_date": result.game_date.isoformat(),
            "first_wave": result.first_wave.as_json(),
            "second_wave": result.second_wave.as_json(),
            "status": result.status.as_json(),
            "predicted_players": result.predicted_players,
            "coverage": result.coverage,
            "latency": result.latency,
            "alerts": result.alerts,
            "report": str(result.report),
        }, default=str))  # fmt: skip
    if result.status.exit_code:
        raise SystemExit(result.status.exit_code)


# -- dispatch commands -----------------------------------------------------------------


def _game_date_option(func):
    return click.option(
        "--game-date",
        type=GameDate(),
        default=None,
        help="Game date YYYY-MM-DD (default: today in America/Los_Angeles).",
    )(func)


def _trigger_source_option(default: str):
    from .events import TRIGGER_SOURCES

    return click.option(
        "--trigger-source",
        type=click.Choice(TRIGGER_SOURCES),
        default=default,
        show_default=True,
        help="What woke this run, recorded in the run log and the requests.",
    )


def _json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(func)


@contextlib.contextmanager
def _without_pandas():
    """DuckDB imports pandas (about 80 MB and 0.3 s) on the first query with parameters,
    only to check whether a value is a pandas object. The dispatch commands never pass
    one, and google-cloud-bigquery treats pandas as optional: keep it out while the
    command runs (and let it back in afterwards for whoever shares the process)."""
    blocked = "pandas" not in sys.modules
    if blocked:
        # A None entry makes `import pandas` raise ImportError: the documented way to block it.
        sys.modules["pandas"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if blocked and sys.modules.get("pandas", 0) is None:
            del sys.modules["pandas"]


def _dispatcher():
    from .dispatch import Dispatcher

    return Dispatcher(_settings())


def _run(call):
    """Run one dispatch call with pandas kept out."""
    with _without_pandas():
        return call()


def _finish(result, as_json: bool) -> None:
    """Print the result (JSON or a summary) and exit with its code."""
    if as_json:
        click.echo(json.dumps(result.as_json(), default=str))
    else:
        click.echo(_summary(result))
    if result.exit_code:
        raise SystemExit(result.exit_code)


def _summary(result) -> str:
    lines = [
        f"{result.command} {result.game_date}: {result.outcome}"
        f" ({result.duration_ms} ms, trigger {result.trigger_source})",
        f"  expected {result.players_expected}, ready {result.players_ready},"
        f" predicted {result.players_predicted}, in flight {result.players_in_flight}",
    ]
    if result.dates is not None:
        busy = sum(1 for day in result.dates if day["requests_published"])
        lines.append(f"  {len(result.dates)} dates with a slate, {busy} had requests to publish;"
                     f" published {result.requests_published}")  # fmt: skip
    elif result.batch_id:
        lines.append(f"  published {result.requests_published} in batch {result.batch_id}")
    if result.players_claimed:
        lines.append(f"  {result.players_claimed} claimed by another dispatch, not confirmed yet;"
                     f" try again in {result.retry_after_seconds} s")  # fmt: skip
    if result.requests_failed:
        lines.append(f"  FAILED to publish {result.requests_failed} (claims released)")
    if result.error:
        lines.append(f"  error: {result.error}")
    for alert in result.alerts:
        lines.append(f"  alert {alert['level']}: {alert['message']} [{alert['status']}]")
    if result.plan is not None:
        from .display import table

        publish = [item for item in result.plan if item["action"] == "publish"]
        skip = [item for item in result.plan if item["action"] == "skip"]
        lines.append(
            f"  would publish {len(publish)}; skip {len(skip)};"
            f" {result.players_filtered} Phase 3 players filtered (not expected)"
        )
        if result.plan:
            lines.append(table(result.plan, ["player_lookup", "state", "action", "reason"]))
    return "\n".join(lines)


@cli.command()
@click.option("--event", "event_json", default=None, metavar="JSON",
              help="The Phase 4 completion event as JSON.")  # fmt: skip
@click.option("--event-file", type=click.File("rb"), default=None,
              help="Read the completion event from a file ('-' for stdin).")  # fmt: skip
@_game_date_option
@_trigger_source_option("manual")
@_json_option
def trigger(event_json, event_file, game_date, trigger_source, as_json) -> None:
    """Primary path: validate the Phase 4 event and dispatch what is pending now."""
    from .events import MAX_EVENT_BYTES, InvalidInput, parse_phase4_event

    if event_json is not None and event_file is not None:
        raise click.UsageError("give --event or --event-file, not both")
    raw = event_json if event_json is not None else (
        event_file.read(MAX_EVENT_BYTES + 1) if event_file is not None else None
    )  # fmt: skip
    if raw is not None:
        try:
            event = parse_phase4_event(raw, today=today_pacific())
        except InvalidInput as exc:
            raise click.BadParameter(str(exc), param_hint="'--event'") from exc
        if game_date is not None and game_date != event.game_date:
            raise click.BadParameter(
                f"--game-date {game_date} disagrees with the event's {event.game_date}",
                param_hint="'--game-date'",
            )
        game_date = event.game_date
    date = game_date or today_pacific()
    _finish(_run(lambda: _dispatcher().trigger(date, trigger_source=trigger_source)), as_json)


@cli.command()
@_game_date_option
@click.option("--wait-minutes", type=click.FloatRange(0, 180), default=30, show_default=True,
              help="How long to wait for Phase 4 readiness.")  # fmt: skip
@click.option("--poll-seconds", type=click.FloatRange(0.01, 3600), default=60,
              show_default=True, help="Readiness poll interval.")  # fmt: skip
@click.option("--force", is_flag=True,
              help="Do not wait; dispatch now and re-request predicted players"
                   " (once per lease).")  # fmt: skip
@_trigger_source_option("manual")
@_json_option
def start(game_date, wait_minutes, poll_seconds, force, trigger_source, as_json) -> None:
    """Scheduler backup: wait for Phase 4, then dispatch (partially unless critical)."""
    date = game_date or today_pacific()
    if not force and wait_minutes:  # on a terminal the INFO lines of each poll are hidden
        logs.progress(f"start {date}: waiting up to {wait_minutes:g} min for Phase 4"
                      f" (a poll every {poll_seconds:g} s)")  # fmt: skip
    try:
        result = _run(lambda: _dispatcher().start(
            date, wait_minutes=wait_minutes, poll_seconds=poll_seconds, force=force,
            trigger_source=trigger_source,
        ))  # fmt: skip
    finally:
        logs.progress_done()
    _finish(result, as_json)


@cli.command()
@_game_date_option
@_trigger_source_option("manual")
@_json_option
def retry(game_date, trigger_source, as_json) -> None:
    """Publish only what is pending now."""
    date = game_date or today_pacific()
    _finish(_run(lambda: _dispatcher().retry(date, trigger_source=trigger_source)), as_json)


@cli.command()
@_game_date_option
@_trigger_source_option("manual")
@_json_option
def status(game_date, trigger_source, as_json) -> None:
    """Coverage check: alerts at the coverage mart's alert level; exit 4 on an SLA breach."""
    date = game_date or today_pacific()
    _finish(_run(lambda: _dispatcher().status(date, trigger_source=trigger_source)), as_json)


@cli.command()
@_game_date_option
@click.option("--force", is_flag=True, help="Plan as `start --force` would dispatch.")
@_json_option
def plan(game_date, force, as_json) -> None:
    """Dry run: who would be published, and why each other player is not."""
    date = game_date or today_pacific()
    _finish(_run(lambda: _dispatcher().plan(date, force=force)), as_json)


@cli.command()
@click.option("--start", "start_date", type=GameDate(), required=True, help="First game date.")
@click.option("--end", "end_date", type=GameDate(), required=True, help="Last game date.")
@click.option("--chunk-days", type=click.IntRange(1, 366), default=10, show_default=True,
              help="Dates claimed and published together.")  # fmt: skip
@_trigger_source_option("backfill")
@_json_option
def backfill(start_date, end_date, chunk_days, trigger_source, as_json) -> None:
    """Dispatch what is pending on every date of a range, with a progress bar; re-runs
    skip the dates with nothing pending."""
    if end_date < start_date:
        raise click.BadParameter(f"{end_date} is before --start {start_date}",
                                 param_hint="'--end'")  # fmt: skip
    days = (end_date - start_date).days + 1
    stderr = click.get_text_stream("stderr")
    with click.progressbar(length=days, label="backfill", file=stderr, show_pos=True,
                           hidden=not logs.shows_progress(stderr)) as bar:  # fmt: skip
        result = _run(lambda: _dispatcher().backfill(
            start_date, end_date, chunk_days=chunk_days, progress=bar.update,
            trigger_source=trigger_source,
        ))  # fmt: skip
    _finish(result, as_json)


@cli.command()
@click.option("--source", type=click.Choice(["local", "pubsub"]), default=None,
              help="Where requests come from (default: DISPATCHER_TRANSPORT).")  # fmt: skip
@click.option("--subscription", default="prediction-request-worker", show_default=True,
              help="Pub/Sub subscription on prediction-request.")  # fmt: skip
@click.option("--max-messages", type=click.IntRange(1), default=None,
              help="Stop after this many requests.")  # fmt: skip
@click.option("--idle-exit-seconds", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this long without a request.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="Requests written per warehouse round trip.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def worker(source, subscription, max_messages, idle_exit_seconds, batch_size, as_json) -> None:
    """Reference Phase 5 worker: consume requests, write the five systems' predictions.
    SIGTERM or Ctrl-C stops it once the batch in hand is written and acknowledged; it
    then prints its closing line and exits 0 (130 after Ctrl-C)."""
    from .sandbox.worker import WorkerError, run_worker

    settings = _settings()
    stop, caught = threading.Event(), list[int]()
    received = 0

    def counted(size: int) -> None:
        nonlocal received
        received += size
        logs.progress(f"worker: {received} requests so far (Ctrl-C stops)")

    logs.progress("worker: waiting for requests (Ctrl-C stops)")
    try:
        with _stop_on_signals(stop, caught):
            result = _run(lambda: run_worker(
                settings, source=source or settings.transport, subscription=subscription,
                max_messages=max_messages, idle_exit_seconds=idle_exit_seconds,
                batch_size=batch_size, progress=counted, stop=stop,
            ))  # fmt: skip
    except (WorkerError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        logs.progress_done()
    stopped_by = signal.Signals(caught[0]).name if caught else None
    if as_json:
        payload: dict[str, object] = dict(result.as_json())
        if stopped_by:
            payload["stopped_by"] = stopped_by
        click.echo(json.dumps(payload))
    else:
        click.echo(
            f"worker: {result.received} requests, {result.written_players} players written,"
            f" {result.duplicates} duplicates, {result.failed} failed"
            f" ({result.duration_ms} ms)" + (f"; stopped by {stopped_by}" if stopped_by else "")
        )
    if stopped_by == "SIGINT":
        raise SystemExit(130)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, caught: list[int]):
    """While the block runs, SIGTERM and SIGINT set ``stop`` and are noted in ``caught``;
    a second one acts as it would have (Ctrl-C: KeyboardInterrupt; SIGTERM: the end)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: Any) -> None:
        caught.append(signum)
        stop.set()
        signal.signal(signum, previous[signum])

    for sig in (signal.SIGTERM, signal.SIGINT):
        old = signal.signal(sig, handler)
        previous[sig] = signal.SIG_DFL if old is None else old
    try:
        yield
    finally:
        for signum, handling in previous.items():
            signal.signal(signum, handling)


# -- Phase 4's side: the completion event --------------------------------------------------


@cli.command()
@_game_date_option
@click.option("--timeout", type=click.FloatRange(0, 600, min_open=True), default=10.0,
              show_default=True,
              help="Seconds the whole announcement may take, Pub/Sub down or not.")  # fmt: skip
@click.option("--players-processed", type=click.IntRange(0), default=None,
              help="Count to send (default: the readiness mart's).")  # fmt: skip
@click.option("--players-ready", type=click.IntRange(0), default=None,
              help="Count to send (default: the readiness mart's).")  # fmt: skip
@click.option("--players-failed", type=click.IntRange(0), default=None,
              help="Count to send (default: the readiness mart's).")  # fmt: skip
@click.option("--run-id", default=None, help="The Phase 4 run's id (default: a new one).")
@_json_option
def announce(game_date, timeout, players_processed, players_ready, players_failed, run_id,
             as_json) -> None:  # fmt: skip
    """Phase 4 side: publish the completion event to nba-phase4-precompute-complete,
    within --timeout whatever Pub/Sub does; prints the message id (exit 1 if not sent)."""
    from .announce import publish_phase4_completion, settings_problems
    from .config import ConfigError, Settings

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise SettingsError(str(exc)) from exc
    problems = settings_problems(settings)
    if problems:
        raise SettingsError("; ".join(problems))
    result = publish_phase4_completion(
        game_date or today_pacific(), players_processed=players_processed,
        players_ready=players_ready, players_failed=players_failed, run_id=run_id,
        timeout=timeout, settings=settings,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps(result.as_json(), default=str))
        if not result.ok:
            raise SystemExit(1)
    elif result.ok:
        click.echo(result.message_id)
    else:
        raise click.ClickException(f"Phase 4 completion for {result.game_date} {result.error}")


# -- serve ------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 in a container, e.g. on Cloud Run).")  # fmt: skip
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port [default: $PORT, as Cloud Run sets it, else 8080].")  # fmt: skip
@click.option("--workers", type=click.IntRange(1, 32), default=1, show_default=True,
              help="gunicorn worker processes; keep 1 on DuckDB (one writing process),"
                   " more are for BigQuery.")  # fmt: skip
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Threads per worker: requests served at once by each.")  # fmt: skip
def serve(host: str, port: int | None, workers: int, threads: int) -> None:
    """HTTP service for Pub/Sub push (POST /trigger) and Cloud Scheduler (POST /start,
    /retry, /status), GET /health, under gunicorn in the foreground; SIGTERM stops it
    gracefully once the requests in hand are answered."""
    from .config import ConfigError

    settings = _settings()
    try:
        from .serve import ServeSettings, resolve_port, run

        push = ServeSettings.from_env()
        port = resolve_port(port)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if workers > 1 and settings.warehouse == "duckdb":
        logs.log("WARNING", f"{workers} workers on DuckDB: the file admits one writing process"
                 " at a time, so they wait for each other; use --threads instead")  # fmt: skip
    if push.audience is None:
        logs.log("WARNING", "DISPATCHER_PUSH_AUDIENCE is unset: requests are not authenticated")
    with _without_pandas():  # for the life of the server: dispatch never needs pandas
        run(settings, push, host=host, port=port, workers=workers, threads=threads)


# -- deployment -------------------------------------------------------------------------

#: `dispatcher infra` options: one per parameter of deploy/resources.yaml (a test holds
#: the two equal); each also read from DISPATCHER_INFRA_<NAME> (DISPATCHER_GCP_PROJECT).
INFRA_PARAMETERS = (
    "project", "region", "service_url", "image", "runtime_service_account",
    "push_service_account", "scheduler_service_account", "push_audience",
    "bigquery_location",
)  # fmt: skip


def _infra_parameter_options(func):
    for name in reversed(INFRA_PARAMETERS):
        envvar = "DISPATCHER_GCP_PROJECT" if name == "project" else None
        func = click.option(
            "--" + name.replace("_", "-"), name, default=None, envvar=envvar,
            help=f"Parameter ${{{name}}} of deploy/resources.yaml.",
        )(func)  # fmt: skip
    return func


@cli.command()
@click.argument("action", type=click.Choice(["plan", "apply"]))
@_infra_parameter_options
@click.option("--only", "sections", type=click.Choice(["pubsub", "scheduler", "run"]),
              multiple=True, help="Only these parts (repeatable; default: all).")  # fmt: skip
@click.option("--resources", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The declaration (default: the repo's deploy/resources.yaml).")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(1, 600), default=30, show_default=True,
              help="Seconds each API call may take (retries included).")  # fmt: skip
@_json_option
def infra(action, sections, resources, timeout, as_json, **parameters) -> None:
    """The deployment resources of deploy/resources.yaml. `plan` shows, changing nothing,
    what `apply` would do: Pub/Sub topics and subscriptions created, updated (field by
    field) or unchanged; Cloud Scheduler jobs and the Cloud Run service likewise when
    google-cloud-scheduler/-run and credentials exist, else rendered only (with the
    gcloud commands). `apply` makes it so; running it twice changes nothing."""
    from .config import ConfigError, Settings
    from .infra import SECTIONS, InfraError, run

    try:
        credentials = Settings.from_env().pubsub_credentials()
    except ConfigError as exc:
        raise SettingsError(str(exc)) from exc
    try:
        report = run(action, parameters, sections=sections or SECTIONS, resources=resources,
                     timeout=timeout, credentials=credentials)  # fmt: skip
    except InfraError as exc:
        raise SettingsError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        for change in report.changes:
            click.echo(change.line())
        if action == "plan" and report.rendered_only:
            click.echo("\nrequests (rendered, not sent):")
            click.echo(json.dumps(
                {k: v for k, v in report.rendered.items() if k in report.rendered_only},
                indent=2,
            ))  # fmt: skip
        for section, reason in report.rendered_only.items():
            click.echo(f"\n{section}: rendered only, nothing sent: {reason}")
        if report.rendered_only:
            click.echo("the same with gcloud (`update` instead of `create`/`deploy` for"
                       " what exists):")  # fmt: skip
            for command in report.gcloud:
                click.echo("  " + command)
    if not report.ok:
        raise SystemExit(1)


# -- the report -------------------------------------------------------------------------


@cli.command()
@click.option("--days", type=click.IntRange(1, 3660), default=30, show_default=True,
              help="Game days to show, up to the last one.")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default="report.html",
              show_default=True, help="The HTML file to write (replaced whole).")  # fmt: skip
@click.option("--game-date", type=GameDate(), default=None,
              help="Last game date to show (default: the latest game day that has happened,"
                   " or a later one with a slate).")  # fmt: skip
@_json_option
def report(days: int, out: Path, game_date: dt.date | None, as_json: bool) -> None:
    """Write one static HTML page (no network needed to view it) of the last game days:
    coverage, Phase 4 readiness, latency, first trigger source and alerts per day, and
    the last date's players that are not predicted."""
    from .config import ConfigError, Settings
    from .report import ReportError, write_report
    from .warehouse import WarehouseError

    if not out.parent.is_dir():
        raise click.BadParameter(f"no directory {out.parent} to write {out.name} in",
                                 param_hint="'--out'")  # fmt: skip
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise SettingsError(str(exc)) from exc
    try:
        summary = write_report(settings, days=days, out=out, end=game_date)
    except (ReportError, WarehouseError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(summary.as_json()))
        return
    payload = summary.as_json()
    if summary.dates:
        click.echo(f"wrote {payload['out']}: {len(summary.dates)} game days,"
                   f" {summary.first_date} to {summary.last_date}, {len(summary.charts)} charts,"
                   f" {summary.players_not_predicted} players not predicted")  # fmt: skip
    else:
        click.echo(f"wrote {payload['out']}: no game day in the warehouse yet (the page says so)")
    click.echo(f"open it in a browser: {payload['url']}")


# -- configuration ----------------------------------------------------------------------


def _option_variables() -> dict[str, str]:
    """The variables click reads for command options (DISPATCHER_<COMMAND>_<OPTION>,
    auto_envvar_prefix), and what each sets."""
    found: dict[str, str] = {}
    for prefix, command, label in [("DISPATCHER", cli, "dispatcher"), *(
        (f"DISPATCHER_{name.upper().replace('-', '_')}", sub, f"dispatcher {name}")
        for name, sub in cli.commands.items()
    )]:  # fmt: skip
        for param in command.params:
            if not isinstance(param, click.Option) or not param.allow_from_autoenv:
                continue
            if param.name in (None, "help"):
                continue
            option = max(param.opts, key=len)
            explicit = [param.envvar] if isinstance(param.envvar, str) else param.envvar or []
            for name in [*explicit, f"{prefix}_{param.name.upper()}"]:
                found[name] = f"option {option} of `{label}`"
    return found


@cli.command("config")
@_json_option
def config_command(as_json: bool) -> None:
    """Show the effective settings: every variable the dispatcher reads, its value and
    where it came from (environment or default), secrets masked; exit 2, naming what is
    wrong, when the settings cannot work together (as every command would refuse them)."""
    from .config import describe

    report = describe(options=_option_variables())
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        from .display import table

        rows = [
            {**row.as_json(), "meaning": ("(planned) " if row.planned else "") + row.meaning}
            for row in report.rows
        ]
        click.echo(table(rows, ["name", "value", "source", "meaning"]))
        click.echo(f"dbt target: {report.dbt_target or '-'}")
        if report.ok:
            click.echo("settings OK")
    if not report.ok:
        raise SettingsError("; ".join(report.problems))
