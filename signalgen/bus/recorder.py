"""Recording signals: history and outbox in one row, each signal id recorded once.

The primary key on `signals.signal_id` is the guarantee that a market event seen twice (two beat
processes, a re-detection on the next check, a retried task) is published once: only the call that
actually inserted the row gets the signal back, and only returned signals are published.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.signal import Signal
from schemas.statuses import DispatchStatus
from signalgen.storage import insert_ignore
from signalgen.storage.models import SignalRecord, SignalTicker


def stored_payload(session: Session, signal_id: uuid.UUID) -> str | None:
    """The JSON a recorded signal was published as (None if the signal is not recorded)."""
    return session.execute(
        select(SignalRecord.payload).where(SignalRecord.signal_id == signal_id)
    ).scalar_one_or_none()


def signal_row(
    signal: Signal, recorded_at: datetime, payload: str | None = None
) -> dict[str, object]:
    """The `signals` row of a signal, unpublished (the outbox state); `payload` is the JSON as
    received when the signal came from another publisher (default: ours)."""
    return {
        "signal_id": signal.signal_id,
        "signal_type": signal.signal_type.value,
        "source": signal.source,
        "tickers": list(signal.tickers),
        "event_time": signal.event_time,
        "created_at": signal.timestamp,
        "recorded_at": recorded_at,
        "payload": signal.to_json() if payload is None else payload,
        "routing_key": signal.routing_key,
        "published_at": None,
        "publish_attempts": 0,
        "last_publish_error": None,
        "dispatch_status": DispatchStatus.PENDING.value,
    }


def record_signals(session: Session, signals: Iterable[Signal]) -> list[Signal]:
    """Insert `signals` (and their ticker index rows); return only those not recorded before.

    Runs `INSERT .. ON CONFLICT DO NOTHING RETURNING signal_id`, so concurrent callers with the
    same signal id get it back in exactly one of them. Order of the input is kept. The caller
    owns the transaction.
    """
    unique: dict[object, Signal] = {}
    for signal in signals:
        unique.setdefault(signal.signal_id, signal)
    if not unique:
        return []
    dialect = session.get_bind().dialect.name
    now = datetime.now(UTC)
    table = SignalRecord.__table__
    statement = insert_ignore(
        table,
        dialect,
        [signal_row(s, now) for s in unique.values()],
        ["signal_id"],
    ).returning(table.c.signal_id)
    inserted = set(session.execute(statement).scalars())
    new = [signal for signal_id, signal in unique.items() if signal_id in inserted]
    ticker_rows = [
        {"ticker": ticker, "created_at": signal.timestamp, "signal_id": signal.signal_id}
        for signal in new
        for ticker in signal.tickers
    ]
    if ticker_rows:
        session.execute(insert_ignore(SignalTicker.__table__, dialect, ticker_rows))
    return new


def refresh_recorded(
    session: Session,
    signals: Iterable[Signal],
    supersedes: Callable[[Signal, Signal], bool],
) -> list[Signal]:
    """Replace the stored payload of already recorded signals where `supersedes(stored, fresh)`
    says so (a confluence composite a later source joined); return the replaced ones.

    Never publishes, never touches the outbox or dispatch state: pipelines ran on the first
    version, and the history shows the latest. The signal's own `timestamp` (when it was first
    made) is kept. Rows are locked (PostgreSQL) so concurrent checks apply in turn, each seeing
    the other's version."""
    fresh = {signal.signal_id: signal for signal in signals}
    if not fresh:
        return []
    statement = select(SignalRecord).where(SignalRecord.signal_id.in_(list(fresh)))
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    replaced = []
    for row in session.execute(statement).scalars():
        try:
            stored = Signal.from_json(row.payload)
        except ValueError:
            continue  # a row that no longer validates is left for an operator to see
        candidate = fresh[row.signal_id].model_copy(update={"timestamp": stored.timestamp})
        if supersedes(stored, candidate):
            row.payload = candidate.to_json()
            replaced.append(candidate)
    return replaced
