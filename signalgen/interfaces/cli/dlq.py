"""`signalgen dlq list|show|requeue|purge`: the dead-letter store, without a database console."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from signalgen.interfaces.cli import storage
from signalgen.interfaces.cli.ops_options import parse_duration, parse_time, parse_uuids


def _filters(func: Any) -> Any:
    options = [
        click.option("--stage", help="dispatch, execute or task."),
        click.option("--reason", "reason_contains", help="Reason contains this text."),
        click.option("--since", help="Received at or after this ISO time."),
        click.option("--until", help="Received before this ISO time."),
        click.option("--older-than", help="Received longer ago than 30m / 6h / 7d."),
        click.option("--signal-id", help="Of this signal."),
        click.option("--pipeline", help="Of this pipeline."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _selection(
    ids: tuple[int, ...],
    status: str | None,
    stage: str | None,
    reason_contains: str | None,
    since: str | None,
    until: str | None,
    older_than: str | None,
    signal_id: str | None,
    pipeline: str | None,
) -> Any:
    from signalgen.ops.dlq import DlqFilter

    end = parse_time(until, "--until")
    age = parse_duration(older_than, "--older-than")
    if age is not None:
        cutoff = datetime.now(UTC) - age
        end = min(end, cutoff) if end is not None else cutoff
    return DlqFilter(
        ids=ids,
        status=status,
        stage=stage,
        reason_contains=reason_contains,
        since=parse_time(since, "--since"),
        until=end,
        signal_id=parse_uuids((signal_id,), "--signal-id")[0] if signal_id else None,
        pipeline_id=parse_uuids((pipeline,), "--pipeline")[0] if pipeline else None,
    )


def _is_filtered(selection: Any) -> bool:
    return bool(
        selection.ids
        or selection.stage
        or selection.reason_contains
        or selection.since
        or selection.until
        or selection.signal_id
        or selection.pipeline_id
    )


@click.group()
def dlq() -> None:
    """Dead letters: messages and executions the bus could not process."""


@dlq.command("list")
@_filters
@click.option(
    "--status", type=click.Choice(["dead", "requeued", "all"]), default="dead", show_default=True
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_(status: str, limit: int, as_json: bool, **filters: Any) -> None:
    """Newest first: id, time, stage, attempts, status, reason."""
    from signalgen.ops.dlq import body_text, count_dead_letters, list_dead_letters

    selection = _selection((), None if status == "all" else status, **filters)
    database = storage.open_database(migrate=False)
    rows = list_dead_letters(database, selection, limit=limit)
    total = count_dead_letters(database, selection)
    if as_json:
        click.echo(json.dumps([_as_dict(row, body_text(row, 200)) for row in rows], indent=2))
        return
    if not rows:
        click.echo("no dead letters")
        return
    for row in rows:
        click.echo(
            f"{row.id:>7} {row.received_at:%Y-%m-%d %H:%M:%S} {row.stage:<9} "
            f"x{row.attempts:<3} {row.status:<9} {row.reason[:110]}"
        )
    click.echo(f"{len(rows)} shown of {total}")


def _as_dict(row: Any, body: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "received_at": row.received_at.isoformat(),
        "stage": row.stage,
        "reason": row.reason,
        "attempts": row.attempts,
        "status": row.status,
        "content_type": row.content_type,
        "headers": row.headers,
        "signal_id": str(row.signal_id) if row.signal_id else None,
        "pipeline_id": str(row.pipeline_id) if row.pipeline_id else None,
        "requeued_at": row.requeued_at.isoformat() if row.requeued_at else None,
        "body": body,
    }


@dlq.command()
@click.argument("dead_letter_id", type=int)
@click.option("--raw", is_flag=True, help="Write only the body, byte for byte, to stdout.")
def show(dead_letter_id: int, raw: bool) -> None:
    """One dead letter in full: reason, headers and body."""
    from signalgen.ops.dlq import body_text, get_dead_letter

    row = get_dead_letter(storage.open_database(migrate=False), dead_letter_id)
    if row is None:
        raise click.ClickException(f"no dead letter {dead_letter_id}")
    if raw:
        click.echo(bytes(row.body), nl=False)  # bytes go to the binary stream as they are
        return
    click.echo(json.dumps(_as_dict(row, body_text(row)), indent=2))


@dlq.command()
@click.argument("ids", type=int, nargs=-1)
@_filters
@click.option("--all", "everything", is_flag=True, help="Every dead row (no filter needed).")
def requeue(ids: tuple[int, ...], everything: bool, **filters: Any) -> None:
    """Send dead letters back through their path (after fixing the cause). Each goes once."""
    from signalgen.ops.dlq import Senders
    from signalgen.ops.dlq import requeue as requeue_rows

    selection = _selection(ids, "dead", **filters)
    if not everything and not _is_filtered(selection):
        raise click.UsageError("give ids, a filter, or --all")
    from signalgen.bus.topology import DISPATCH_QUEUE, PIPELINES_QUEUE
    from tasks import app

    result = requeue_rows(
        storage.open_database(migrate=True),
        selection,
        Senders(app.send_task, DISPATCH_QUEUE, PIPELINES_QUEUE),
    )
    click.echo(
        f"requeued {result.requeued}, skipped {result.skipped} (already requeued), "
        f"errors {result.errors}"
    )
    if result.errors:
        raise SystemExit(1)


@dlq.command()
@click.argument("ids", type=int, nargs=-1)
@_filters
@click.option(
    "--status", type=click.Choice(["dead", "requeued", "all"]), default="all", show_default=True
)
@click.option("--all", "everything", is_flag=True, help="Purge without any other filter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(ids: tuple[int, ...], status: str, everything: bool, yes: bool, **filters: Any) -> None:
    """Delete dead letters for good."""
    from signalgen.ops.dlq import count_dead_letters
    from signalgen.ops.dlq import purge as purge_rows

    selection = _selection(ids, None if status == "all" else status, **filters)
    if not everything and not _is_filtered(selection) and status == "all":
        raise click.UsageError("give ids, a filter, --status, or --all")
    database = storage.open_database(migrate=True)
    count = count_dead_letters(database, selection)
    if not yes:
        click.confirm(f"delete {count} dead letter(s)?", abort=True)
    click.echo(f"purged {purge_rows(database, selection)}")
