"""`signalgen`: the operator's command line. Each command group lives in its own module."""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from importlib import metadata

import click

from signalgen.failures import current_endpoints, describe

#: (module, attribute) of every command registered on `signalgen`; add yours here.
COMMANDS: list[tuple[str, str]] = [
    ("signalgen.interfaces.cli.backtest", "backtest"),
    ("signalgen.interfaces.cli.bars", "bars"),
    ("signalgen.interfaces.cli.usage", "usage"),
    ("signalgen.interfaces.cli.http", "api"),
    ("signalgen.interfaces.cli.users", "users"),
    ("signalgen.interfaces.cli.users", "keys"),
    ("signalgen.interfaces.cli.dev", "dev"),
    ("signalgen.interfaces.cli.replay", "replay"),
    ("signalgen.interfaces.cli.dlq", "dlq"),
    ("signalgen.interfaces.cli.pipelines", "pipelines"),
    ("signalgen.interfaces.cli.signals", "signals"),
    ("signalgen.interfaces.cli.secrets", "secrets"),
]


def version() -> str:
    try:
        return metadata.version("signal-generator")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


class _State:
    """Set by the group's options before any command runs; read by `run` after a failure."""

    verbose = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version(), "--version", "-V", prog_name="signalgen")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Show INFO log lines, and the full traceback of a failure.",
)
def main(verbose: bool) -> None:
    """Signal Generator: the event-driven signal bus that wakes trading pipelines."""
    _State.verbose = verbose


@main.command()
def schema() -> None:
    """Print the JSON Schema of a Signal on the wire."""
    from schemas.signal import signal_json_schema

    click.echo(json.dumps(signal_json_schema(), indent=2))


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option(
    "--sample-bars",
    is_flag=True,
    help="Also load the bundled sample daily bars if the bar store is empty (a demo history).",
)
def db_upgrade(sample_bars: bool) -> None:
    """Create or migrate the database schema to the newest version."""
    from signalgen.logs import redact
    from signalgen.storage import get_database, migrate

    database = get_database()
    outcome = migrate(database)
    click.echo(f"{outcome.describe()}: {redact(database.engine.url.render_as_string(False))}")
    if sample_bars:
        from signalgen.marketdata import BarStore
        from signalgen.marketdata.csv_import import load_sample_bars

        store = BarStore(database)
        if store.summary():
            click.echo("bar store not empty: sample bars not loaded")
        else:
            loaded = load_sample_bars(store)
            click.echo(f"loaded {sum(loaded.values())} sample bars for {', '.join(sorted(loaded))}")


def _register() -> None:
    for module_name, attribute in COMMANDS:
        module = importlib.import_module(module_name)
        main.add_command(getattr(module, attribute))


_register()


def run(argv: list[str] | None = None) -> None:
    """The console script: a connection or configuration failure is one line on stderr (the
    URL's password masked, what to try) and a non-zero exit; `-v` adds the traceback. Any other
    exception is a bug and keeps its traceback."""
    from signalgen.interfaces.cli.output import configure_cli_logging

    configure_cli_logging(lambda: _State.verbose)
    try:
        main(args=argv, standalone_mode=True)
    except Exception as exc:
        failure = describe(exc, current_endpoints())
        if failure is None:
            raise
        if _State.verbose:
            traceback.print_exception(exc, file=sys.stderr)
        hint = "" if _State.verbose else " (signalgen -v ...: the traceback)"
        click.echo(f"{failure.line}{hint}", err=True)
        sys.exit(failure.exit_code)
