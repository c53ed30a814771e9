"""`signalgen replay`: deliver stored signals again (fill gaps, or `--force` a new generation).

Runs here with a progress bar by default (it needs the database and the broker, like a worker);
`--enqueue` hands the same request to a worker as the `signals.replay` task instead (watch it in
Flower). `--dry-run` lists what would run and changes nothing.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from signalgen.interfaces.cli.ops_options import parse_duration, parse_time, parse_uuids


def _request(
    signal_ids: tuple[str, ...],
    since: str | None,
    until: str | None,
    last: str | None,
    signal_types: tuple[str, ...],
    tickers: tuple[str, ...],
    sources: tuple[str, ...],
    pipelines: tuple[str, ...],
    force: bool,
    dry_run: bool,
    limit: int | None,
) -> dict[str, Any]:
    start = parse_time(since, "--since")
    window = parse_duration(last, "--last")
    if window is not None:
        if start is not None:
            raise click.UsageError("give --since or --last, not both")
        start = datetime.now(UTC) - window
    request: dict[str, Any] = {
        "signal_ids": [str(i) for i in parse_uuids(signal_ids, "--signal-id")],
        "signal_types": list(signal_types),
        "tickers": list(tickers),
        "sources": list(sources),
        "pipeline_ids": [str(i) for i in parse_uuids(pipelines, "--pipeline")],
        "force": force,
        "dry_run": dry_run,
        "requested_by": f"cli:{_os_user()}",
    }
    end = parse_time(until, "--until")
    if start is not None:
        request["since"] = start.isoformat()
    if end is not None:
        request["until"] = end.isoformat()
    if limit is not None:
        request["limit"] = limit
    return {key: value for key, value in request.items() if value not in ([], None)}


def _os_user() -> str:
    """Who runs the command, for the `replays` record ("unknown" without a login name)."""
    import getpass

    try:
        return getpass.getuser()[:100]
    except (OSError, KeyError):
        return "unknown"


@click.command()
@click.option("--signal-id", "signal_ids", multiple=True, help="A signal id (repeatable).")
@click.option("--since", help="Signals created at or after this ISO time (UTC if naive).")
@click.option("--until", help="Signals created before this ISO time.")
@click.option("--last", help="Signals of the last 30m / 6h / 1d / 2w (instead of --since).")
@click.option("--type", "signal_types", multiple=True, help="Signal type (repeatable).")
@click.option("--ticker", "tickers", multiple=True, help="Ticker (repeatable).")
@click.option("--source", "sources", multiple=True, help="Generator name (repeatable).")
@click.option(
    "--pipeline",
    "pipelines",
    multiple=True,
    help="Only these pipelines (repeatable); default: every matching pipeline.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Run again even where already run: a new, recorded replay generation.",
)
@click.option("--dry-run", is_flag=True, help="List what would run; change nothing.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many signals.")
@click.option("--enqueue", is_flag=True, help="Send to a worker as the signals.replay task.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def replay(enqueue: bool, as_json: bool, **selection: Any) -> None:
    """Re-dispatch stored signals to pipelines that have not run them (or, with --force, again)."""
    from dispatcher import replay as replaying

    data = _request(**selection)
    force, dry_run = selection["force"], selection["dry_run"]
    try:
        request = replaying.parse_request(data)
    except replaying.InvalidReplay as exc:
        raise click.UsageError(str(exc)) from None
    from tasks import app

    if enqueue:
        result = app.send_task("signals.replay", kwargs=data)
        click.echo(f"signals.replay enqueued: task id {result.id}")
        return
    from signalgen.config import load_watchlist
    from signalgen.interfaces.cli import storage
    from signalgen.settings import get_settings
    from tasks.dispatch import _enqueue_executions

    settings = get_settings()
    database = storage.open_database(migrate=True)
    index = replaying.current_index(
        database, load_watchlist(settings.watchlist_config_path).tickers
    )
    total = replaying.count_selected(database, request)
    with click.progressbar(length=total, label="replaying", file=sys.stderr, show_pos=True) as bar:
        seen = [0]

        def progress(done: int, _total: int, _result: replaying.ReplayResult) -> None:
            bar.update(done - seen[0])
            seen[0] = done

        outcome = replaying.replay(
            request,
            db=database,
            index=index,
            progress=progress,
            enqueue=None if dry_run else _enqueue_executions(None, None),
        )
    summary = outcome.as_dict(with_plan=dry_run)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    if dry_run:
        for run in outcome.planned:
            note = f" (was {run.status})" if run.status else ""
            click.echo(
                f"{run.action:<10} signal {run.signal_id} → pipeline {run.pipeline_id} "
                f"g{run.generation}{note}"
            )
    runs = outcome.to_run if dry_run else outcome.enqueued
    click.echo(
        f"{'would run' if dry_run else 'enqueued'} {runs}"
        f" of {outcome.matched} matching deliveries for {outcome.signals} signals: "
        f"{outcome.claimed} new, {outcome.rearmed} re-armed (failed/rate-limited), "
        f"{outcome.reenqueued} re-enqueued, {outcome.forced} forced, {outcome.skipped} skipped "
        "(already run)"
        + (f"; generations {summary['generations']}" if force else "")
        + (f"; recorded as replay {outcome.replay_id}" if outcome.replay_id else "")
    )
