"""`signalgen`: the operator's command line. Each command group lives in its own module."""

from __future__ import annotations

import importlib
import json
import sys

import click

from signalgen.config import ConfigError

#: (module, attribute) of every command registered on `signalgen`; add yours here.
COMMANDS: list[tuple[str, str]] = [
    ("signalgen.cli.backtest", "backtest"),
    ("signalgen.cli.bars", "bars"),
    ("signalgen.cli.usage", "usage"),
    ("signalgen.cli.http", "api"),
    ("signalgen.cli.users", "users"),
    ("signalgen.cli.users", "keys"),
    ("signalgen.cli.dev", "dev"),
    ("signalgen.cli.replay", "replay"),
    ("signalgen.cli.dlq", "dlq"),
    ("signalgen.cli.pipelines", "pipelines"),
    ("signalgen.cli.signals", "signals"),
    ("signalgen.cli.secrets", "secrets"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Signal Generator: the event-driven signal bus that wakes trading pipelines."""


@main.command()
def schema() -> None:
    """Print the JSON Schema of a Signal on the wire."""
    from schemas.signal import signal_json_schema

    click.echo(json.dumps(signal_json_schema(), indent=2))


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the newest version."""
    from signalgen.db import get_database, migrate

    database = get_database()
    migrate(database)
    click.echo(f"database at {database.engine.url.render_as_string(True)} is up to date")


def _register() -> None:
    for module_name, attribute in COMMANDS:
        module = importlib.import_module(module_name)
        main.add_command(getattr(module, attribute))


_register()


def run() -> None:
    try:
        main(standalone_mode=True)
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)
