"""The outbox: recorded signals are published after their row commits, and again until taken.

`publish_recorded` publishes signals just recorded by a generator run; `publish_pending` is the
sweep that republishes whatever the broker refused (rows with `published_at IS NULL`). Both mark
the row published only after the broker took the message, so delivery is at-least-once; the
sweep locks the rows it sends (`FOR UPDATE SKIP LOCKED` on PostgreSQL) so two sweepers do not
send one row twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from schemas.signal import Signal
from signalgen.bus.publisher import PublishError, SignalPublisher
from signalgen.logs import log_event
from signalgen.storage import Database
from signalgen.storage.models import SignalRecord

logger = logging.getLogger("signalgen.bus")

#: How long an unpublished row must have waited before the sweep takes it over: longer than a
#: generate run's own publish attempt (bounded retries, a few seconds), so the two never race.
DEFAULT_SWEEP_AGE = timedelta(seconds=30)
DEFAULT_SWEEP_LIMIT = 500


@dataclass(frozen=True)
class PublishOutcome:
    published: int
    failed: int
    last_error: str | None = None


def _mark_published(session: Session, signal_id: object, when: datetime) -> None:
    session.execute(
        update(SignalRecord)
        .where(SignalRecord.signal_id == signal_id, SignalRecord.published_at.is_(None))
        .values(
            published_at=when,
            publish_attempts=SignalRecord.publish_attempts + 1,
            last_publish_error=None,
        )
    )


def _mark_failed(session: Session, signal_id: object, error: str) -> None:
    session.execute(
        update(SignalRecord)
        .where(SignalRecord.signal_id == signal_id)
        .values(publish_attempts=SignalRecord.publish_attempts + 1, last_publish_error=error[:2000])
    )


def _refused(
    event: str, signal_id: object, published: int, batch: Sequence[object], error: str
) -> PublishOutcome:
    """The broker refused `signal_id`: it and the rest of `batch` after the `published` ones
    wait for the sweep (logged as `event`)."""
    pending = len(batch) - published
    log_event(
        logger, event, logging.WARNING, signal_id=str(signal_id), pending=pending, error=error
    )
    return PublishOutcome(published, pending, error)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _emitted(
    *,
    signal_id: str,
    signal_type: str,
    tickers: Sequence[str],
    timestamp: str,
    source: str,
    routing_key: str,
    via: str,
    sample_data: bool = False,
) -> None:
    log_event(
        logger,
        "signal_emitted",
        signal_id=signal_id,
        signal_type=signal_type,
        tickers=list(tickers),
        timestamp=timestamp,
        source=source,
        routing_key=routing_key,
        via=via,
        # Computed from bundled sample history, not the market (signalgen.marketdata.sample).
        **({"sample_data": True} if sample_data else {}),
    )


def publish_recorded(
    database: Database, publisher: SignalPublisher, signals: Sequence[Signal]
) -> PublishOutcome:
    """Publish signals whose rows were just committed; mark each published or leave it pending.

    On the first refusal the rest are left for the sweep (the broker is most likely down, and
    each attempt costs its bounded retries).
    """
    published = 0
    for index, signal in enumerate(signals):
        try:
            publisher.publish(signal.to_json(), signal.routing_key)
        except PublishError as exc:
            error = str(exc)
            with database.session() as session:
                for pending in signals[index:]:
                    _mark_failed(session, pending.signal_id, error)
            return _refused("signal_publish_failed", signal.signal_id, published, signals, error)
        with database.session() as session:
            _mark_published(session, signal.signal_id, datetime.now(UTC))
        published += 1
        _emitted(
            signal_id=str(signal.signal_id),
            signal_type=signal.signal_type.value,
            tickers=signal.tickers,
            timestamp=_iso(signal.timestamp),
            source=signal.source,
            routing_key=signal.routing_key,
            via="generate",
            sample_data=signal.metadata.get("sample_data") is True,
        )
    return PublishOutcome(published, 0)


def publish_pending(
    database: Database,
    publisher: SignalPublisher,
    older_than: timedelta = DEFAULT_SWEEP_AGE,
    limit: int = DEFAULT_SWEEP_LIMIT,
) -> PublishOutcome:
    """Republish outbox rows recorded more than `older_than` ago, oldest first, at most `limit`.

    The rows stay locked while they are sent, so a second sweeper skips them. The stored payload
    is sent byte for byte. Stops at the first refusal: the rest wait for the next sweep. One
    transaction: a crash midway republishes the batch later (harmless downstream, rare).
    """
    cutoff = datetime.now(UTC) - older_than
    published = 0
    with database.session() as session:
        query = (
            select(SignalRecord)
            .where(SignalRecord.published_at.is_(None), SignalRecord.recorded_at <= cutoff)
            .order_by(SignalRecord.recorded_at, SignalRecord.signal_id)
            .limit(limit)
        )
        if database.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = list(session.execute(query).scalars())
        for row in rows:
            try:
                publisher.publish(row.payload, row.routing_key)
            except PublishError as exc:
                row.publish_attempts = (row.publish_attempts or 0) + 1
                row.last_publish_error = str(exc)[:2000]
                return _refused("outbox_publish_failed", row.signal_id, published, rows, str(exc))
            row.published_at = datetime.now(UTC)
            row.publish_attempts = (row.publish_attempts or 0) + 1
            row.last_publish_error = None
            session.flush()
            published += 1
            _emitted(
                signal_id=str(row.signal_id),
                signal_type=row.signal_type,
                tickers=row.tickers,
                timestamp=_iso(row.created_at),
                source=row.source,
                routing_key=row.routing_key,
                via="outbox",
            )
    return PublishOutcome(published, 0)
