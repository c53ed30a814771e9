"""`signalgen signals list|show`: signal history with what each signal woke and how fast."""

from __future__ import annotations

import json
import uuid
from typing import Any

import click

from signalgen.cli.ops_options import parse_time


def _database() -> Any:
    from signalgen.db import get_database
    from signalgen.db.engine import ensure_schema

    database = get_database()
    ensure_schema(database)
    return database


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
    from sqlalchemy import select

    from signalgen.db.models import SignalRecord, SignalTicker

    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    statement = select(SignalRecord).order_by(SignalRecord.created_at.desc()).limit(limit)
    if ticker:
        statement = statement.join(
            SignalTicker, SignalTicker.signal_id == SignalRecord.signal_id
        ).where(SignalTicker.ticker == ticker.upper())
        if start is not None:
            statement = statement.where(SignalTicker.created_at >= start)
        if end is not None:
            statement = statement.where(SignalTicker.created_at < end)
    if signal_type:
        statement = statement.where(SignalRecord.signal_type == signal_type)
    if source:
        statement = statement.where(SignalRecord.source == source)
    if start is not None:
        statement = statement.where(SignalRecord.created_at >= start)
    if end is not None:
        statement = statement.where(SignalRecord.created_at < end)
    if status:
        statement = statement.where(SignalRecord.dispatch_status == status)
    with _database().session() as session:
        rows = session.execute(statement).scalars().all()
    for row in rows:
        item = {
            "signal_id": str(row.signal_id),
            "created_at": _iso(row.created_at),
            "type": row.signal_type,
            "tickers": row.tickers,
            "source": row.source,
            "dispatch": row.dispatch_status,
            "matched": row.matched_count,
        }
        if as_json:
            click.echo(json.dumps(item))
        else:
            matched = "-" if row.matched_count is None else row.matched_count
            click.echo(
                f"{item['signal_id']}  {item['created_at']}  {row.signal_type:<20}  "
                f"{','.join(row.tickers):<24}  {row.source:<24}  "
                f"{row.dispatch_status:<10}  matched={matched}"
            )
    if not as_json:
        click.echo(f"{len(rows)} signal(s)", err=True)


@signals.command("show")
@click.argument("signal_id")
def show(signal_id: str) -> None:
    """A signal, its dispatch outcome, and every execution it caused (with latencies)."""
    from sqlalchemy import select

    from signalgen.db.models import Execution, Pipeline, SignalRecord

    try:
        parsed = uuid.UUID(signal_id)
    except ValueError:
        raise click.BadParameter(f"{signal_id!r} is not a UUID", param_hint="SIGNAL_ID") from None
    with _database().session() as session:
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
