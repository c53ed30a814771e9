"""`signalgen dev`: worker + beat (+ API) in one command; embedded broker and SQLite by default."""

from __future__ import annotations

import sys

import click


@click.command("dev")
@click.option(
    "--concurrency",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes.",
)
@click.option(
    "--beat/--no-beat",
    default=True,
    show_default=True,
    help="Run Celery beat (the generators' schedule).",
)
@click.option(
    "--api-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Also serve the HTTP API on 127.0.0.1:PORT.",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    default=None,
    help="Overrides LOG_LEVEL.",
)
def dev(concurrency: int, beat: bool, api_port: int | None, log_level: str | None) -> None:
    """Run the whole service locally until Ctrl-C.

    With BROKER_URL and DATABASE_URL set, uses them. With neither, runs offline: an embedded
    Redis-protocol server on a free local port, the SQLite default, bundled sample bars. The
    mock generator runs every 15 s unless MOCK_GENERATOR_INTERVAL_SECONDS is set. Every
    published signal is a `signal_emitted` JSON line on stdout.
    """
    from signalgen.interfaces.dev import DevOptions, run_dev

    sys.exit(
        run_dev(
            DevOptions(concurrency=concurrency, beat=beat, api_port=api_port, log_level=log_level)
        )
    )
