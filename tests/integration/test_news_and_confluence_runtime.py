"""News and confluence generators through the live runner on real services: a local server
speaking Finnhub's /company-news format, the shared limiter in Redis, signals and usage counts in
PostgreSQL, publication to the `trading-signals` exchange read by a plain Kombu consumer."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kombu import Connection, Queue
from sqlalchemy import func, select

from bench.fakes.fake_finnhub import FakeFinnhub
from generators.base import Tick
from generators.confluence import ConfluenceConfig, ConfluenceGenerator
from generators.news import NewsConfig, NewsSignalGenerator
from schemas.config import GeneratorEntry
from schemas.signal import Bias, Signal, SignalBias, SignalType, stable_signal_id
from signalgen.bus import KombuPublisher, publish_recorded, record_signals
from signalgen.bus.topology import SIGNAL_EXCHANGE
from signalgen.config import GeneratorSpec
from signalgen.marketdata.finnhub import COMPANY_NEWS, FinnhubSource
from signalgen.marketdata.limiter import Limit, RedisRateLimiter
from signalgen.marketdata.usage import DatabaseUsage, usage_totals
from signalgen.runtime import build_resources, run_generator
from signalgen.settings import Settings
from signalgen.storage import Database
from signalgen.storage.models import SignalRecord

pytestmark = pytest.mark.integration

API_KEY = "sk-news-test-1234"
NAME = "news_sentiment_generator"


def article(article_id: int, headline: str, hours_ago: float = 1.0) -> dict[str, Any]:
    stamp = int((datetime.now(UTC) - timedelta(hours=hours_ago)).timestamp())
    return {
        "category": "company",
        "datetime": stamp,
        "headline": headline,
        "id": article_id,
        "image": "",
        "related": "AAPL",
        "source": "Reuters",
        "summary": "",
        "url": f"https://example.com/{article_id}",
    }


@pytest.fixture
def server() -> Iterator[FakeFinnhub]:
    with FakeFinnhub(token=API_KEY) as fake:
        fake.news["AAPL"] = [
            article(9001, "Apple shares soar after record profit and strong growth")
        ]
        yield fake


@pytest.fixture
def subscriber(redis_url: str, redis_client: object) -> Iterator[Any]:
    connection = Connection(redis_url)
    queue = Queue(
        f"it-news-{uuid.uuid4().hex[:8]}",
        exchange=SIGNAL_EXCHANGE,
        routing_key="signal.#",
        durable=False,
    )
    bound = queue(connection.default_channel)
    bound.declare()
    yield bound
    bound.delete()
    connection.release()


def drain(bound: Any) -> list[Signal]:
    out = []
    while (message := bound.get(no_ack=True)) is not None:
        out.append(Signal.from_json(message.body))
    return out


def resources_for(
    spec: GeneratorSpec, database: Database, redis_url: str, redis_client: Any, source: Any | None
) -> Any:
    settings = Settings(DATABASE_URL=database.url, BROKER_URL=redis_url)  # type: ignore[call-arg]
    return build_resources(
        settings,
        specs={spec.name: spec},
        database=database,
        publisher=KombuPublisher(redis_url),
        market_source=source,
    )


def news_spec() -> GeneratorSpec:
    generator = NewsSignalGenerator(NewsConfig(), source=NAME, tickers=("AAPL",))
    return GeneratorSpec(
        name=NAME,
        entry=GeneratorEntry(type="news_sentiment", interval_seconds=900),
        generator=generator,
    )


def finnhub(server: FakeFinnhub, redis_client: Any, database: Database) -> FinnhubSource:
    limiter = RedisRateLimiter(
        redis_client, [Limit(30, 1.0), Limit(60, 60.0)], key="test:news:limiter"
    )
    return FinnhubSource(
        API_KEY,
        limiter=limiter,
        base_url=server.base_url,
        timeout=2.0,
        usage=DatabaseUsage(database),
    )


def signal_rows(database: Database) -> int:
    with database.session() as session:
        return int(session.scalar(select(func.count()).select_from(SignalRecord)) or 0)


def test_same_article_on_ten_checks_is_one_signal_and_ten_counted_calls(
    server: FakeFinnhub, pg_db: Database, redis_url: str, redis_client: Any, subscriber: Any
) -> None:
    source = finnhub(server, redis_client, pg_db)
    spec = news_spec()
    resources = resources_for(spec, pg_db, redis_url, redis_client, source)
    now = datetime.now(UTC)
    results = [
        run_generator(spec, Tick.for_slot(now + timedelta(minutes=15 * i), 900), resources)
        for i in range(10)
    ]
    resources.close()
    source.close()
    assert [r.computed for r in results] == [1] * 10
    assert [r.new for r in results] == [1] + [0] * 9
    assert server.count("/company-news") == 10
    [total] = [t for t in usage_totals(pg_db) if t.endpoint == COMPANY_NEWS]
    assert (total.generator, total.calls, total.errors) == (NAME, 10, 0)
    [signal] = drain(subscriber)
    assert signal.signal_type is SignalType.NEWS and signal.metadata["article_id"] == "9001"
    assert signal.bias["AAPL"].bias is Bias.BULLISH
    assert signal_rows(pg_db) == 1


def test_429_is_retried_through_the_limiter(
    server: FakeFinnhub, pg_db: Database, redis_url: str, redis_client: Any, subscriber: Any
) -> None:
    server.set_mode("/company-news", "429", "ok")
    source = finnhub(server, redis_client, pg_db)
    spec = news_spec()
    resources = resources_for(spec, pg_db, redis_url, redis_client, source)
    result = run_generator(spec, Tick.for_slot(datetime.now(UTC), 900), resources)
    resources.close()
    source.close()
    assert result.new == 1
    assert server.count("/company-news") == 2
    [total] = [t for t in usage_totals(pg_db) if t.endpoint == COMPANY_NEWS]
    assert (total.calls, total.errors) == (2, 1)
    assert len(drain(subscriber)) == 1


def test_403_is_logged_and_the_run_goes_on(
    server: FakeFinnhub,
    pg_db: Database,
    redis_url: str,
    redis_client: Any,
    subscriber: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.set_mode("/company-news", "403")
    source = finnhub(server, redis_client, pg_db)
    spec = news_spec()
    resources = resources_for(spec, pg_db, redis_url, redis_client, source)
    with caplog.at_level(logging.INFO):
        result = run_generator(spec, Tick.for_slot(datetime.now(UTC), 900), resources)
    resources.close()
    source.close()
    assert (result.computed, result.new, result.failed) == (0, 0, None)
    assert server.count("/company-news") == 1  # a 403 is never retried
    assert any(getattr(r, "event", None) == "news_fetch_refused" for r in caplog.records)
    assert resources.counters["news_fetch_refused"] == 1
    assert drain(subscriber) == [] and signal_rows(pg_db) == 0


def stored(database: Database, redis_url: str, signals: list[Signal]) -> None:
    with database.session() as session:
        new = record_signals(session, signals)
    publisher = KombuPublisher(redis_url)
    publish_recorded(database, publisher, new)
    publisher.close()


def external(
    source: str, kind: SignalType, bias: Bias, confidence: float, at: datetime, key: str
) -> Signal:
    return Signal(
        signal_id=stable_signal_id(
            source=source, signal_type=kind, tickers=("AAPL",), event_key=key
        ),
        signal_type=kind,
        tickers=("AAPL",),
        bias={"AAPL": SignalBias(ticker="AAPL", bias=bias, confidence=confidence)},
        timestamp=at,
        event_time=at,
        source=source,
    )


def test_confluence_reads_recorded_signals_and_publishes_one_composite(
    pg_db: Database, redis_url: str, redis_client: Any, subscriber: Any
) -> None:
    now = datetime.now(UTC)
    golden = external(
        "golden_cross_generator",
        SignalType.GOLDEN_CROSS,
        Bias.BULLISH,
        0.85,
        now - timedelta(days=2),
        "gc",
    )
    news = external(NAME, SignalType.NEWS, Bias.BULLISH, 0.6, now - timedelta(hours=3), "n1")
    old = external(NAME, SignalType.NEWS, Bias.BULLISH, 0.6, now - timedelta(days=30), "old")
    stored(pg_db, redis_url, [golden, news, old])
    drain(subscriber)
    generator = ConfluenceGenerator(ConfluenceConfig(), source="confluence_generator", tickers=())
    spec = GeneratorSpec(
        name="confluence_generator",
        entry=GeneratorEntry(type="confluence", interval_seconds=300),
        generator=generator,
    )
    resources = resources_for(spec, pg_db, redis_url, redis_client, None)
    first = run_generator(spec, Tick.for_slot(now, 300), resources)
    second = run_generator(spec, Tick.for_slot(now + timedelta(minutes=5), 300), resources)
    resources.close()
    assert (first.computed, first.new, second.computed, second.new) == (1, 1, 1, 0)
    [composite] = drain(subscriber)
    assert composite.signal_type is SignalType.CONFLUENCE
    assert composite.bias["AAPL"].confidence == pytest.approx(1 - 0.15 * 0.4)
    assert {c["signal_id"] for c in composite.metadata["constituents"]} == {
        str(golden.signal_id),
        str(news.signal_id),
    }


def test_a_later_source_updates_the_stored_composite_without_publishing_again(
    pg_db: Database, redis_url: str, redis_client: Any, subscriber: Any
) -> None:
    """Issue 12: confluence emitted a new composite each time another source joined (3 in
    20 s, each re-running pipelines). Now: one publish per (ticker, bias, window); the later
    source grows the stored row."""
    generator = ConfluenceGenerator(
        ConfluenceConfig(lookback_days=7), source="confluence_generator", tickers=()
    )
    now = datetime.now(UTC)
    base = generator.window_start(now) - timedelta(days=3)  # the last whole window: all past
    golden = external(
        "golden_cross_generator", SignalType.GOLDEN_CROSS, Bias.BULLISH, 0.85, base, "gc"
    )
    news = external(NAME, SignalType.NEWS, Bias.BULLISH, 0.6, base + timedelta(hours=1), "n1")
    breakout = external(
        "volatility_breakout_generator",
        SignalType.VOLATILITY_BREAKOUT,
        Bias.BULLISH,
        0.5,
        base + timedelta(hours=2),
        "vb",
    )
    stored(pg_db, redis_url, [golden, news])
    drain(subscriber)
    spec = GeneratorSpec(
        name="confluence_generator",
        entry=GeneratorEntry(type="confluence", interval_seconds=300),
        generator=generator,
    )
    resources = resources_for(spec, pg_db, redis_url, redis_client, None)
    try:
        first = run_generator(spec, Tick.for_slot(now, 300), resources)
        [published] = drain(subscriber)
        with pg_db.session() as session:
            row = session.get(SignalRecord, published.signal_id)
            assert row is not None
            first_published_at, first_timestamp = row.published_at, published.timestamp
        stored(pg_db, redis_url, [breakout])
        drain(subscriber)
        later = run_generator(spec, Tick.for_slot(now + timedelta(minutes=5), 300), resources)
        again = run_generator(spec, Tick.for_slot(now + timedelta(minutes=10), 300), resources)
    finally:
        resources.close()
    assert (first.new, first.published, later.new, later.published) == (1, 1, 0, 0)
    assert (again.new, again.published) == (0, 0)
    assert drain(subscriber) == []  # nothing published again: no pipeline runs twice
    with pg_db.session() as session:
        row = session.get(SignalRecord, published.signal_id)
        assert row is not None
        composites = session.scalar(
            select(func.count())
            .select_from(SignalRecord)
            .where(SignalRecord.signal_type == "confluence")
        )
        grown = Signal.from_json(row.payload)
        assert composites == 1
        assert row.published_at == first_published_at
    assert {c["signal_id"] for c in grown.metadata["constituents"]} == {
        str(golden.signal_id),
        str(news.signal_id),
        str(breakout.signal_id),
    }
    assert grown.bias["AAPL"].confidence == pytest.approx(1 - 0.15 * 0.4 * 0.5)
    assert grown.timestamp == first_timestamp  # when it was first made
    assert grown.event_time == published.event_time
