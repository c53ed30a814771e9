"""Factories for the operations tests: signals, pipelines, executions (seeded UTC data)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.signal import Bias, Signal, SignalBias, SignalType, stable_signal_id
from signalgen.bus import record_signals
from signalgen.storage import Database
from signalgen.storage.models import Execution, Pipeline

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)


def record_pipelines(
    db: Database, redis_url: str, ticker: str, *, owner: str, count: int, namespace: uuid.UUID
) -> list[uuid.UUID]:
    """`count` signal pipelines of `owner` on `ticker` (mock signals included), `record`
    executors, ids stable under `namespace`; registered as the API does."""
    from dispatcher.store import import_specs
    from schemas.pipeline import PipelineSpec

    ids = [uuid.uuid5(namespace, f"p{n}") for n in range(count)]
    specs = [
        PipelineSpec.model_validate(
            {
                "id": str(pipeline_id),
                "owner": owner,
                "name": f"{owner}-{n}",
                "trigger_mode": "signal",
                "scanner": {"tickers": [ticker], "include_mock": True},
                "executor": {"kind": "record"},
            }
        )
        for n, pipeline_id in enumerate(ids)
    ]
    import_specs(db, specs, redis_url=redis_url)
    return ids


def publish_ticker_signals(
    db: Database,
    broker_url: str,
    ticker: str,
    *,
    tag: str,
    source: str,
    count: int,
    repeats: int = 0,
) -> list[Signal]:
    """Record and publish `count` new signals on `ticker` as the product does (history +
    outbox), the first `repeats` of them a second time (a publisher's retry)."""
    from signalgen.bus import KombuPublisher, publish_recorded

    now = datetime.now(UTC)
    signals = [
        ticker_signal(ticker, f"{tag}|{n}|{now.isoformat()}", source=source, at=now)
        for n in range(count)
    ]
    with db.session() as session:
        recorded = record_signals(session, signals)
    publisher = KombuPublisher(broker_url)
    try:
        assert publish_recorded(db, publisher, recorded).published == count
        for signal in signals[:repeats]:
            publisher.publish(signal.to_json(), signal.routing_key)
    finally:
        publisher.close()
    return signals


def ticker_signal(
    ticker: str,
    event_key: str,
    *,
    source: str,
    at: datetime,
    signal_type: SignalType = SignalType.MOCK,
    bias: Bias = Bias.BULLISH,
    confidence: float = 0.7,
    reasoning: str = "",
    metadata: dict[str, Any] | None = None,
) -> Signal:
    """A signal on `ticker` alone, made and happened `at`, its id derived from `source`, the
    type, the ticker and `event_key`."""
    return Signal(
        signal_id=stable_signal_id(
            source=source, signal_type=signal_type, tickers=(ticker,), event_key=event_key
        ),
        signal_type=signal_type,
        tickers=(ticker,),
        bias={
            ticker: SignalBias(ticker=ticker, bias=bias, confidence=confidence, reasoning=reasoning)
        },
        metadata=metadata or {},
        timestamp=at,
        event_time=at,
        source=source,
    )


def make_signal(
    ticker: str = "AAPL",
    index: int = 0,
    *,
    source: str = "test_gen",
    signal_type: SignalType = SignalType.GOLDEN_CROSS,
    bias: Bias = Bias.BULLISH,
    at: datetime = T0,
    confidence: float = 0.8,
) -> Signal:
    moment = at + timedelta(minutes=index)
    return ticker_signal(
        ticker,
        f"{moment.isoformat()}|{index}",
        source=source,
        at=moment,
        signal_type=signal_type,
        bias=bias,
        confidence=confidence,
        reasoning="test",
        metadata={"index": index},
    )


def record(db: Database, signals: list[Signal]) -> None:
    with db.session() as session:
        record_signals(session, signals)


def add_pipeline(
    db: Database,
    *,
    owner: str = "alice",
    tickers: tuple[str, ...] = ("AAPL",),
    signal_types: tuple[str, ...] = (),
    executor: str = "record",
    executor_config: dict[str, object] | None = None,
    created_at: datetime | None = None,
) -> uuid.UUID:
    pipeline_id = uuid.uuid4()
    with db.session() as session:
        session.add(
            Pipeline(
                id=pipeline_id,
                owner=owner,
                name=f"p-{pipeline_id.hex[:6]}",
                enabled=True,
                trigger_mode="signal",
                scanner={
                    "tickers": list(tickers),
                    "watchlist": False,
                    "signal_types": list(signal_types),
                    "biases": [],
                    "min_confidence": 0.0,
                },
                executor=executor,
                executor_config=executor_config or {},
                **({"created_at": created_at} if created_at else {}),
            )
        )
    return pipeline_id


def add_execution(
    db: Database, pipeline_id: uuid.UUID, signal: Signal, *, status: str, generation: int = 0
) -> int:
    with db.session() as session:
        row = Execution(
            pipeline_id=pipeline_id,
            signal_id=signal.signal_id,
            idempotency_key=f"signal:{signal.signal_id}:g{generation}",
            generation=generation,
            status=status,
            attempts=1,
            claimed_at=T0,
        )
        session.add(row)
        session.flush()
        return int(row.id)
