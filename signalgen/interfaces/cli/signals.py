"""`signalgen signals list|show`: signal history with what each signal woke and how fast."""

from __future__ import annotations

import json
import uuid
from datetime import UTC
from typing import Any

import click

from signalgen.interfaces.cli import storage
from signalgen.interfaces.cli.ops_options import parse_time
from signalgen.interfaces.cli.output import print_items


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


@click.group()
def signals() -> None:
    """Signal history and dispatch outcomes."""


@signals.command("list")
@click.option("--ticker", help="Signals naming this ticker.")
@click.option("--type", "signal_type", help="Signal type (golden_cross, mock, ...).")
@click.option("--source", help="Source (generator name or external publisher).")
@click.option("--since", help="Created at or after this ISO time.")
@click.option("--until", help="Created before this ISO time.")
@click.option(
    "--status", type=click.Choice(["pending", "dispatched", "unmatched"]), help="Dispatch outcome."
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(
    ticker: str | None,
    signal_type: str | None,
    source: str | None,
    since: str | None,
    until: str | None,
    status: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Newest first."""
    from signalgen.interfaces.http import queries

    with storage.open_database(migrate=False).session() as session:
        found, _ = queries.list_signals(
            session,
            limit=limit,
            ticker=ticker.upper() if ticker else None,
            signal_type=signal_type or None,
            source=source or None,
            since=parse_time(since, "--since"),
            until=parse_time(until, "--until"),
            dispatch_status=status or None,
        )
    names = [column.key for column in queries.SIGNAL_COLUMNS]
    items = [_list_item(dict(zip(names, row, strict=True))) for row in found]
    print_items(items, as_json, _list_line, "signal")


def _list_item(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "signal_id": str(row["signal_id"]),
        # rows may come as the driver made them: the time in UTC, as stored
        "created_at": _iso(row["created_at"].astimezone(UTC)),
        "type": row["signal_type"],
        "tickers": row["tickers"],
        "source": row["source"],
        "dispatch": row["dispatch_status"],
        "matched": row["matched_count"],
    }


def _list_line(item: dict[str, Any]) -> str:
    matched = "-" if item["matched"] is None else item["matched"]
    return (
        f"{item['signal_id']}  {item['created_at']}  {item['type']:<20}  "
        f"{','.join(item['tickers']):<24}  {item['source']:<24}  "
        f"{item['dispatch']:<10}  matched={matched}"
    )


@signals.command("show")
@click.argument("signal_id")
def show(signal_id: str) -> None:
    """A signal, its dispatch outcome, and every execution it caused (with latencies)."""
    from sqlalchemy import select

    from signalgen.storage.models import Execution, Pipeline, SignalRecord

    try:
        parsed = uuid.UUID(signal_id)
    except ValueError:
        raise click.BadParameter(f"{signal_id!r} is not a UUID", param_hint="SIGNAL_ID") from None
    with storage.open_database(migrate=False).session() as session:
        record = session.get(SignalRecord, parsed)
        executions = session.execute(
            select(Execution, Pipeline.owner, Pipeline.name, Pipeline.executor)
            .join(Pipeline, Pipeline.id == Execution.pipeline_id)
            .where(Execution.signal_id == parsed)
            .order_by(Execution.id)
        ).all()
    if record is None:
        raise click.ClickException(f"no signal {signal_id}")
    latencies = sorted(e.latency_seconds for e, *_ in executions if e.latency_seconds is not None)
    statuses: dict[str, int] = {}
    for execution, *_ in executions:
        statuses[execution.status] = statuses.get(execution.status, 0) + 1
    out = {
        "signal": json.loads(record.payload),
        "routing_key": record.routing_key,
        "published_at": _iso(record.published_at),
        "dispatch": {
            "status": record.dispatch_status,
            "matched": record.matched_count,
            "dispatched_at": _iso(record.dispatched_at),
        },
        "executions": {"total": len(executions), "by_status": statuses},
        "latency_ms": _latency_summary(latencies),
        "matched_pipelines": [
            {
                "pipeline_id": str(e.pipeline_id),
                "owner": owner,
                "name": name,
                "executor": executor,
                "key": e.idempotency_key,
                "status": e.status,
                "attempts": e.attempts,
                "started_at": _iso(e.started_at),
                "finished_at": _iso(e.finished_at),
                "latency_ms": round(e.latency_seconds * 1000, 1)
                if e.latency_seconds is not None
                else None,
                "error": e.error,
            }
            for e, owner, name, executor in executions
        ],
    }
    click.echo(json.dumps(out, indent=2))


def _latency_summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None

    def pick(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)

    return {"min": pick(0), "p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)}
