"""Recording and publishing: duplicates suppressed, refused messages kept and swept later."""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from kombu import Connection, Queue
from sqlalchemy import func, select

from schemas.signal import Bias, Signal, SignalBias, SignalType, stable_signal_id
from signalgen.bus import (
    PUBLISHED_AT_HEADER,
    KombuPublisher,
    PublishError,
    publish_pending,
    publish_recorded,
    record_signals,
)
from signalgen.bus.topology import DISPATCH_INTAKE_QUEUE, SIGNAL_EXCHANGE
from signalgen.storage import Database
from signalgen.storage.models import SignalRecord, SignalTicker

NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def make_signal(
    ticker: str = "AAPL",
    key: str = "2026-03-02",
    source: str = "test_gen",
    tickers: tuple[str, ...] | None = None,
) -> Signal:
    tickers = tickers or (ticker,)
    return Signal(
        signal_id=stable_signal_id(
            source=source, signal_type=SignalType.GOLDEN_CROSS, tickers=tickers, event_key=key
        ),
        signal_type=SignalType.GOLDEN_CROSS,
        tickers=tickers,
        bias={
            t: SignalBias(ticker=t, bias=Bias.BULLISH, confidence=0.85, reasoning="cross")
            for t in tickers
        },
        metadata={"sma_short": 50},
        timestamp=NOW,
        event_time=datetime(2026, 3, 2, tzinfo=UTC),
        source=source,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def memory_bus() -> Iterator[tuple[Connection, Queue]]:
    """A real Kombu in-memory broker with a subscriber bound to every signal."""
    connection = Connection("memory://")
    queue = Queue(
        f"test-sub-{uuid.uuid4().hex[:8]}", exchange=SIGNAL_EXCHANGE, routing_key="signal.#"
    )
    queue(connection.default_channel).declare()
    yield connection, queue
    connection.release()


def drain(connection: Connection, queue: Queue) -> list[object]:
    bound = queue(connection.default_channel)
    messages = []
    while (message := bound.get(no_ack=True)) is not None:
        messages.append(message)
    return messages


def count(database: Database, model: type) -> int:
    with database.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_record_signals_returns_only_new_ones(sqlite_db: Database) -> None:
    first, second = make_signal("AAPL"), make_signal("MSFT")
    with sqlite_db.session() as session:
        assert record_signals(session, [first, first]) == [first]
    with sqlite_db.session() as session:
        # A re-detection of `first` (same id, made later) is not new; `second` is.
        again = first.model_copy(update={"timestamp": NOW + timedelta(minutes=5)})
        assert record_signals(session, [again, second]) == [second]
    with sqlite_db.session() as session:
        assert record_signals(session, [first, second]) == []
    assert count(sqlite_db, SignalRecord) == 2
    assert count(sqlite_db, SignalTicker) == 2
    with sqlite_db.session() as session:
        row = session.get(SignalRecord, first.signal_id)
        assert row is not None
        assert row.published_at is None  # in the outbox until the broker takes it
        assert Signal.from_json(row.payload) == first
        assert row.routing_key == "signal.golden_cross.AAPL"


def test_multi_ticker_signal_indexes_every_ticker(sqlite_db: Database) -> None:
    signal = make_signal(tickers=("AAPL", "MSFT", "NVDA"))
    with sqlite_db.session() as session:
        assert record_signals(session, [signal]) == [signal]
        tickers = sorted(session.scalars(select(SignalTicker.ticker)))
    assert tickers == ["AAPL", "MSFT", "NVDA"]
    assert signal.routing_key == "signal.golden_cross.multi"


def test_publisher_sends_plain_json_with_headers(memory_bus: tuple[Connection, Queue]) -> None:
    connection, queue = memory_bus
    signal = make_signal()
    intake = Queue("signals.dispatch", exchange=SIGNAL_EXCHANGE, routing_key="signal.#")(
        connection.default_channel
    )
    intake.declare()
    intake.purge()  # the in-memory broker is shared by the whole test process
    with KombuPublisher("memory://") as publisher:
        publisher.publish(signal.to_json(), signal.routing_key)
    [message] = drain(connection, queue)
    assert message.content_type == "application/json"  # type: ignore[attr-defined]
    assert message.delivery_info["routing_key"] == "signal.golden_cross.AAPL"  # type: ignore[attr-defined]
    assert message.properties["delivery_mode"] == 2  # type: ignore[attr-defined]
    published_at = message.headers[PUBLISHED_AT_HEADER]  # type: ignore[attr-defined]
    assert isinstance(published_at, float)
    assert abs(published_at - datetime.now(UTC).timestamp()) < 60
    body = json.loads(message.body)  # type: ignore[attr-defined]
    assert Signal.model_validate(body) == signal
    # The dispatcher's intake queue was declared and bound, so it holds the signal too.
    got = intake.get(no_ack=True)
    assert got is not None and Signal.from_json(got.body) == signal


def test_connect_declares_the_exchange_and_intake_queue_before_any_publish() -> None:
    with KombuPublisher("memory://") as publisher:
        publisher.connect()
        connection = publisher._connection
        assert connection is not None and connection.connected
        declared = connection.declared_entities  # kombu keeps the entities' hashes
        assert {hash(SIGNAL_EXCHANGE), hash(DISPATCH_INTAKE_QUEUE)} <= declared
        # The first publish reuses that connection and its declarations.
        publisher.publish(make_signal().to_json(), "signal.golden_cross.AAPL")
        assert publisher._connection is connection


def test_connect_to_a_closed_port_raises_publish_error_and_the_next_try_starts_over() -> None:
    publisher = KombuPublisher(f"redis://127.0.0.1:{closed_port()}/0")
    with pytest.raises(PublishError, match=r"(?i)connect|refused"):
        publisher.connect()
    assert publisher._connection is None
    publisher.close()


def test_publisher_to_a_closed_port_raises_publish_error_quickly() -> None:
    started = datetime.now(UTC)
    publisher = KombuPublisher(f"redis://127.0.0.1:{closed_port()}/0")
    with pytest.raises(PublishError, match=r"(?i)connect|refused"):
        publisher.publish(make_signal().to_json(), "signal.golden_cross.AAPL")
    publisher.close()
    assert datetime.now(UTC) - started < timedelta(seconds=10)


def test_refused_signal_stays_in_outbox_and_sweep_publishes_it(
    sqlite_db: Database, memory_bus: tuple[Connection, Queue], caplog: pytest.LogCaptureFixture
) -> None:
    connection, queue = memory_bus
    signals = [make_signal("AAPL"), make_signal("MSFT")]
    with sqlite_db.session() as session:
        new = record_signals(session, signals)
    down = KombuPublisher(f"redis://127.0.0.1:{closed_port()}/0")
    outcome = publish_recorded(sqlite_db, down, new)
    down.close()
    assert (outcome.published, outcome.failed) == (0, 2)
    with sqlite_db.session() as session:
        rows = list(session.scalars(select(SignalRecord)))
    assert all(r.published_at is None and r.publish_attempts == 1 for r in rows)
    assert all("refused" in (r.last_publish_error or "").lower() for r in rows)

    # The sweep leaves rows younger than `older_than` to the run that recorded them.
    with KombuPublisher("memory://") as up:
        assert publish_pending(sqlite_db, up, older_than=timedelta(hours=1)).published == 0
        with caplog.at_level(logging.INFO, logger="signalgen.bus"):
            swept = publish_pending(sqlite_db, up, older_than=timedelta(0))
        assert (swept.published, swept.failed) == (2, 0)
        assert publish_pending(sqlite_db, up, older_than=timedelta(0)).published == 0

    received = [Signal.from_json(m.body) for m in drain(connection, queue)]  # type: ignore[attr-defined]
    assert sorted(s.signal_id for s in received) == sorted(s.signal_id for s in signals)
    with sqlite_db.session() as session:
        rows = list(session.scalars(select(SignalRecord)))
    assert all(r.published_at is not None and r.publish_attempts == 2 for r in rows)
    assert all(r.last_publish_error is None for r in rows)
    emitted = [r for r in caplog.records if getattr(r, "event", None) == "signal_emitted"]
    assert len(emitted) == 2
    fields = emitted[0].fields  # type: ignore[attr-defined]
    assert set(fields) >= {
        "signal_id",
        "signal_type",
        "tickers",
        "timestamp",
        "source",
        "routing_key",
    }
    assert fields["timestamp"] == "2026-03-02T14:30:00Z"


def test_sweep_publishes_oldest_first_and_respects_limit(
    sqlite_db: Database, memory_bus: tuple[Connection, Queue]
) -> None:
    connection, queue = memory_bus
    signals = [make_signal(key=f"2026-03-0{day}") for day in (1, 2, 3)]
    for offset, signal in enumerate(signals):
        with sqlite_db.session() as session:
            record_signals(session, [signal])
            row = session.get(SignalRecord, signal.signal_id)
            assert row is not None
            row.recorded_at = NOW - timedelta(minutes=10 - offset)
    with KombuPublisher("memory://") as publisher:
        outcome = publish_pending(sqlite_db, publisher, older_than=timedelta(0), limit=2)
    assert outcome.published == 2
    received = [Signal.from_json(m.body).signal_id for m in drain(connection, queue)]  # type: ignore[attr-defined]
    assert received == [signals[0].signal_id, signals[1].signal_id]
