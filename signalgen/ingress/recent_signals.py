"""Loading recent signals for `inputs = "signals"` generators (confluence), at the edge."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from schemas.signal import Signal, SignalType
from signalgen.logs import log_event
from signalgen.storage.models import SignalRecord

logger = logging.getLogger("signalgen.ingress.signals")

MAX_SIGNALS = 50_000


def recent_signals(
    database: Any, *, since: datetime, exclude_source: str | None = None, limit: int = MAX_SIGNALS
) -> list[Signal]:
    """Recorded signals with event time at or after `since`, oldest first (confluence excluded).

    A stored payload that no longer validates is logged and skipped.
    """
    query = (
        select(SignalRecord.payload)
        .where(
            SignalRecord.event_time >= since,
            SignalRecord.signal_type != SignalType.CONFLUENCE.value,
        )
        .order_by(SignalRecord.event_time, SignalRecord.signal_id)
        .limit(limit)
    )
    if exclude_source is not None:
        query = query.where(SignalRecord.source != exclude_source)
    out: list[Signal] = []
    with database.session() as session:
        payloads = list(session.scalars(query))
    for payload in payloads:
        try:
            out.append(Signal.from_json(payload))
        except ValidationError as exc:
            log_event(
                logger,
                "stored_signal_unreadable",
                logging.WARNING,
                reason=str(exc.errors()[0]["msg"]),
            )
    return out


def load_recent_signals(spec: Any, resources: Any) -> list[Signal]:
    """The runtime's loader for a signals generator: what it needs to look back over."""
    generator = spec.generator
    days = generator.history_days() if hasattr(generator, "history_days") else 7.0
    since = datetime.now(UTC) - timedelta(days=days)
    return recent_signals(resources.database, since=since, exclude_source=spec.name)
