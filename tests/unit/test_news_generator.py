"""NewsSignalGenerator: VADER scoring offline, neutral band, identity per article, purity."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from generators import default_registry
from generators.base import Tick
from generators.news import NewsConfig, NewsItem, NewsSignalGenerator, compound_score
from schemas.signal import Bias, SignalType, stable_signal_id

NOW = datetime(2024, 3, 1, 15, 0, tzinfo=UTC)


def tick(now: datetime = NOW) -> Tick:
    return Tick.for_slot(now, 900)


def make(tickers: tuple[str, ...] = ("AAPL", "MSFT"), **settings: object) -> NewsSignalGenerator:
    return NewsSignalGenerator(NewsConfig.model_validate(settings), source="news", tickers=tickers)


def item(article_id: int, headline: str, ticker: str = "AAPL", hours_ago: float = 2.0) -> NewsItem:
    return NewsItem.from_finnhub(
        ticker,
        {
            "id": article_id,
            "headline": headline,
            "summary": "",
            "source": "Reuters",
            "url": f"https://example.com/{article_id}",
            "category": "company",
            "datetime": int((NOW - timedelta(hours=hours_ago)).timestamp()),
        },
    )


GOOD = "Apple shares soar after record profit and strong growth"
BAD = "Microsoft faces lawsuit, shares plunge on weak outlook and losses"
DULL = "Apple to hold annual shareholder meeting on Tuesday"


def test_registered_with_defaults() -> None:
    assert default_registry().get("news_sentiment") is NewsSignalGenerator
    assert NewsSignalGenerator.inputs == "news"
    config = NewsConfig()
    assert (config.lookback_days, config.neutral_band, config.emit_neutral) == (3, 0.3, False)


def test_scores_are_vader_compound_and_offline() -> None:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    reference = SentimentIntensityAnalyzer().polarity_scores(GOOD)["compound"]
    assert compound_score(GOOD) == reference > 0.3
    assert compound_score(BAD) < -0.3
    assert abs(compound_score(DULL)) < 0.3


def test_bias_and_confidence_from_the_compound_score() -> None:
    signals = make().compute([item(1, GOOD), item(2, BAD, "MSFT"), item(3, DULL)], tick())
    assert [(s.tickers[0], s.bias[s.tickers[0]].bias) for s in signals] == [
        ("AAPL", Bias.BULLISH),
        ("MSFT", Bias.BEARISH),
    ]
    good = signals[0]
    assert good.signal_type is SignalType.NEWS
    assert good.bias["AAPL"].confidence == pytest.approx(min(0.9, compound_score(GOOD)), abs=1e-4)
    assert good.metadata["article_id"] == "1" and good.metadata["headline"] == GOOD
    assert good.event_time == NOW - timedelta(hours=2)
    assert good.signal_id == stable_signal_id(
        source="news", signal_type=SignalType.NEWS, tickers=("AAPL",), event_key="article:1"
    )
    neutral = make(emit_neutral=True).compute([item(3, DULL)], tick())
    assert [s.bias["AAPL"].bias for s in neutral] == [Bias.NEUTRAL]


def test_each_article_counted_once_across_checks() -> None:
    generator = make()
    first = generator.compute([item(1, GOOD), item(1, GOOD)], tick())
    later = generator.compute([item(1, GOOD), item(4, BAD)], tick(NOW + timedelta(hours=1)))
    assert len(first) == 1
    assert first[0].signal_id in {s.signal_id for s in later}
    assert len({s.signal_id for s in first + later}) == 2


def test_window_other_tickers_and_future_articles_are_skipped() -> None:
    generator = make(("AAPL",), lookback_days=1)
    items = [
        item(1, GOOD, hours_ago=30),
        item(2, GOOD, "TSLA"),
        item(3, GOOD, hours_ago=-1),
        item(4, GOOD),
    ]
    assert [s.metadata["article_id"] for s in generator.compute(items, tick())] == ["4"]


def test_no_look_ahead() -> None:
    """At each check the signals are exactly those of articles already published."""
    items = [item(i + 1, GOOD if i % 2 else BAD, hours_ago=48 - 4 * i) for i in range(12)]
    generator = make(("AAPL",), lookback_days=3)
    full = {s.signal_id: s for s in generator.compute(items, tick(NOW + timedelta(days=1)))}
    for k in range(len(items)):
        moment = items[k].published_at
        visible = [i for i in items if i.published_at <= moment]
        live = generator.compute(visible, tick(moment))
        assert [s.signal_id for s in live] == [
            sid for sid, s in full.items() if s.event_time <= moment
        ]
        assert all(s == full[s.signal_id].model_copy(update={"timestamp": moment}) for s in live)


@pytest.mark.parametrize("data", [[], None])
def test_no_news_gives_no_signal_and_a_logged_reason(
    data: object, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="generators.news"):
        assert make().compute(data, tick()) == []  # type: ignore[arg-type]
    assert any(getattr(r, "event", None) == "insufficient_data" for r in caplog.records)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"lookback_days": 0}, "lookback_days"),
        ({"neutral_band": 1.0}, "neutral_band"),
        ({"neutral_band": -0.1}, "neutral_band"),
        ({"max_confidence": 1.5}, "max_confidence"),
    ],
)
def test_config_edges(settings: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        NewsConfig.model_validate(settings)
    assert field in str(caught.value)


def test_neutral_band_edges() -> None:
    score = compound_score(GOOD)
    assert make(neutral_band=round(score, 4) - 0.0001).compute([item(1, GOOD)], tick())
    assert make(neutral_band=min(0.9999, score + 0.0001)).compute([item(1, GOOD)], tick()) == []
    # Band 0: any non-zero score has a direction; an exactly neutral text stays neutral.
    assert make(neutral_band=0.0).compute([item(9, "The meeting is on Tuesday")], tick()) == []


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ({"headline": "x", "datetime": 1}, "id"),
        ({"id": 5, "headline": "x"}, "publication time"),
        ({"id": 5, "headline": "  ", "datetime": 1}, "headline"),
        ({"id": True, "headline": "x", "datetime": 1}, "id"),
    ],
)
def test_unusable_finnhub_items_are_refused_with_the_field(
    raw: dict[str, object], text: str
) -> None:
    with pytest.raises(ValueError, match=text):
        NewsItem.from_finnhub("AAPL", raw)
