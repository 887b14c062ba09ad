"""`dispatcher`: the command line. Thin commands over the library; heavy imports
(dbt, duckdb, google-cloud) happen inside the commands, not at start-up."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import click

from . import __version__

PACIFIC = ZoneInfo("America/Los_Angeles")
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "DISPATCHER"}


def today_pacific() -> dt.date:
    return dt.datetime.now(PACIFIC).date()


class GameDate(click.ParamType):
    """YYYY-MM-DD, a real calendar date."""

    name = "YYYY-MM-DD"

    def convert(self, value, param, ctx):
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not a date YYYY-MM-DD", param, ctx)


def _settings():
    from .config import ConfigError, Settings

    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="dispatcher")
def cli() -> None:
    """Phase 4 -> Phase 5 dispatcher: request only the missing predictions."""


@cli.command()
@click.option(
    "--game-date", type=GameDate(), default=None, help="Game date (default: today in PT)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def demo(game_date: dt.date | None, as_json: bool) -> None:
    """Make a sample slate on the embedded DuckDB, build the models, show the marts."""
    from .demo import run_demo

    settings = _settings()
    game_date = game_date or today_pacific()
    echo = (lambda _line: None) if as_json else click.echo
    try:
        result = run_demo(settings, game_date, echo=echo)
    except (ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(
            json.dumps(
                {
                    "game_date": result.game_date.isoformat(),
                    "readiness": result.readiness,
                    "coverage": result.coverage,
                    "states": result.states,
                },
                default=str,
            )
        )
