"""Tables. Every guarantee the bus makes rests on a constraint here, not on a lock.

- `signals`: history and outbox in one row. A signal id is inserted once (primary key), so a
  cross seen by two beats is recorded, and published, once. `published_at IS NULL` is the outbox.
- `executions`: the claims table. UNIQUE (pipeline_id, idempotency_key) makes one execution per
  (pipeline, signal, generation) or (pipeline, schedule slot), whatever is redelivered.
- `replays` / `replay_generations`: every replay run, and which one owns each generation above
  0 of a signal. The bus only ever claims generation 0.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, validates

from schemas.statuses import DispatchStatus, ExecutionStatus, ReplayStatus
from signalgen.storage.base import Base, UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


class Bar(Base):
    """One daily OHLCV bar. (ticker, day) is unique: sources upsert, never duplicate."""

    __tablename__ = "bars"

    ticker: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    open: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)
    low: Mapped[float] = mapped_column(Float)
    close: Mapped[float] = mapped_column(Float)
    volume: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SignalRecord(Base):
    """A signal as recorded and published: history, outbox and dispatch outcome."""

    __tablename__ = "signals"

    signal_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    signal_type: Mapped[str] = mapped_column(String(40), index=True)
    source: Mapped[str] = mapped_column(String(100), index=True)
    tickers: Mapped[list[str]] = mapped_column(JSON)
    event_time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The exact JSON put on the exchange; replay and the outbox resend these bytes.
    payload: Mapped[str] = mapped_column(Text)
    routing_key: Mapped[str] = mapped_column(String(200))
    #: Outbox state: NULL until the broker took the message.
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    publish_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_publish_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Dispatch outcome: pending, dispatched, unmatched.
    dispatch_status: Mapped[str] = mapped_column(String(16), default=DispatchStatus.PENDING)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    matched_count: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        Index(
            "ix_signals_outbox",
            "recorded_at",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
        # The repair sweep's question: published, never dispatched, recorded lately.
        Index(
            "ix_signals_undispatched",
            "recorded_at",
            postgresql_where=text("dispatch_status = 'pending'"),
            sqlite_where=text("dispatch_status = 'pending'"),
        ),
    )


class SignalTicker(Base):
    """Signal ↔ ticker, so history filters by ticker through an index on any database."""

    __tablename__ = "signal_tickers"

    ticker: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    signal_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("signals.signal_id", ondelete="CASCADE"), primary_key=True
    )


class ProviderCall(Base):
    """Data-provider calls counted per generator, endpoint and hour (cost tracking)."""

    __tablename__ = "provider_calls"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    generator: Mapped[str] = mapped_column(String(100), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    calls: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)


class Pipeline(Base):
    """A user's trading pipeline, woken by signals (`signal`) or by the clock (`periodic`)."""

    __tablename__ = "pipelines"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    trigger_mode: Mapped[str] = mapped_column(String(16), index=True)
    #: Validated by schemas.pipeline.Scanner: tickers | watchlist, signal_types, biases,
    #: min_confidence.
    scanner: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: Validated by schemas.pipeline.Schedule: interval_seconds | crontab.
    schedule: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    executor: Mapped[str] = mapped_column(String(32), default="record")
    executor_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Execution(Base):
    """A claim, then an execution: one row per (pipeline, idempotency key), ever.

    Status moves claimed → enqueued → running → succeeded | failed (or rate_limited).
    """

    __tablename__ = "executions"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    pipeline_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("pipelines.id", ondelete="CASCADE")
    )
    idempotency_key: Mapped[str] = mapped_column(String(200))
    signal_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True, index=True)
    slot: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=ExecutionStatus.CLAIMED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Seconds from the signal's publication to this execution's start.
    latency_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        UniqueConstraint("pipeline_id", "idempotency_key"),
        Index("ix_executions_pipeline_claimed", "pipeline_id", "claimed_at"),
        # The dashboard's window (executions per hour, failures per pipeline, last 7 days).
        Index("ix_executions_claimed_at", "claimed_at"),
    )


class Replay(Base):
    """A replay someone asked for (not a dry run): who, when, and the request as given.

    A forced replay's generations are rows of `replay_generations` pointing here: a generation
    above 0 is claimed only by the replay that recorded it, never on a bus header's word.
    """

    __tablename__ = "replays"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    #: "cli:<os user>", "api:<user>", or what the `signals.replay` task was sent with.
    requested_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: queued (asked for over the API, not started), running, finished, failed; `unknown` for
    #: replays recorded before outcomes were (migration 0005).
    status: Mapped[str] = mapped_column(
        String(16), default=ReplayStatus.RUNNING, server_default=ReplayStatus.UNKNOWN.value
    )
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The counts of `ReplayResult.as_dict()` once finished (planned, run, skipped, ...).
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class ReplayGeneration(Base):
    """Generation `generation` (> 0) of a signal belongs to one forced replay: the primary key
    gives two concurrent forced replays of one signal two generations, never a shared one."""

    __tablename__ = "replay_generations"

    signal_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, primary_key=True)
    replay_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("replays.id", ondelete="CASCADE"), index=True
    )


class DeadLetter(Base):
    """A message the bus could not process, kept whole with the reason, for an operator."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    stage: Mapped[str] = mapped_column(String(32), index=True)  # dispatch, execute, publish, ...
    reason: Mapped[str] = mapped_column(Text)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str | None] = mapped_column(String(100), nullable=True)
    headers: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    signal_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True, index=True)
    pipeline_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="dead", index=True)
    requeued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @validates("reason")
    def _redact_reason(self, key: str, value: str) -> str:
        # Shown by `signalgen dlq` and /metrics labels: every URL's query values masked.
        from signalgen.logs import redact

        return redact(value)


class User(Base):
    """An API user. `name` is what `pipelines.owner` holds; an admin sees every user's objects."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """An API key, stored as the SHA-256 of a high-entropy random key (the key is shown once).

    `prefix` (the key's first characters) lets an operator tell keys apart without the secret.
    """

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
