"""News sentiment: Finnhub /company-news headlines scored offline with VADER.

Each article is scored once: VADER's compound score c in [-1, 1] of its headline (plus its summary
when `use_summary`). Outside the neutral band the article is a signal for its ticker:
c >= neutral_band is BULLISH, c <= -neutral_band is BEARISH, with confidence
min(max_confidence, |c|). Inside the band it is NEUTRAL and only emitted with `emit_neutral`.

Identity: (source, type, ticker, Finnhub's article id). The same article fetched on every check
(Finnhub returns the last days' news each time) is the same signal, recorded and published once.
`event_time` is the article's publication time.

`compute` is pure over a list of `NewsItem`s; fetching (through the shared Finnhub limiter,
counted per generator) is the edge's job (`signalgen.ingress.news`). VADER's lexicon ships in the
vaderSentiment package and is read from it once per process; nothing is downloaded.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field

from generators.base import BaseSignalGenerator, GeneratorConfig, Tick
from schemas.signal import (
    Bias,
    Signal,
    SignalType,
    validate_ticker,
)
from signalgen.logs import log_event

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewsItem:
    """One article about one ticker, as Finnhub's /company-news lists it."""

    ticker: str
    article_id: str
    headline: str
    published_at: datetime
    summary: str = ""
    provider: str = ""
    url: str = ""

    def __post_init__(self) -> None:
        if self.published_at.tzinfo is None:
            raise ValueError("NewsItem.published_at must be timezone-aware UTC")
        validate_ticker(self.ticker)
        if not self.article_id:
            raise ValueError("NewsItem.article_id is empty")

    @classmethod
    def from_finnhub(cls, ticker: str, item: Mapping[str, Any]) -> NewsItem:
        """From one /company-news object (id, datetime epoch seconds, headline, summary, ...).

        Raises ValueError naming the field when the item cannot be used.
        """
        article_id = item.get("id")
        if (
            isinstance(article_id, bool)
            or not isinstance(article_id, int | str)
            or article_id in ("", 0)
        ):
            raise ValueError(f"news item without an id: {article_id!r}")
        stamp = item.get("datetime")
        if isinstance(stamp, bool) or not isinstance(stamp, int | float) or stamp <= 0:
            raise ValueError(f"news item {article_id} has no publication time: {stamp!r}")
        headline = item.get("headline")
        if not isinstance(headline, str) or not headline.strip():
            raise ValueError(f"news item {article_id} has no headline")
        summary = item.get("summary")
        return cls(
            ticker=ticker,
            article_id=str(article_id),
            headline=headline.strip(),
            published_at=datetime.fromtimestamp(stamp, UTC),
            summary=summary.strip() if isinstance(summary, str) else "",
            provider=str(item.get("source") or ""),
            url=str(item.get("url") or ""),
        )


class NewsConfig(GeneratorConfig):
    """Settings of a news-sentiment generator."""

    #: Articles published within this many days before the check count (and are fetched).
    lookback_days: int = Field(default=3, ge=1, le=365)
    #: |compound| below this is neutral.
    neutral_band: float = Field(default=0.3, ge=0.0, lt=1.0, allow_inf_nan=False)
    use_summary: bool = False
    emit_neutral: bool = False
    max_confidence: float = Field(default=0.9, ge=0.0, le=1.0, allow_inf_nan=False)


@functools.cache
def _analyzer() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def compound_score(text: str) -> float:
    """VADER's compound sentiment of `text`, in [-1, 1]. Deterministic and offline."""
    return float(_analyzer().polarity_scores(text)["compound"])


class NewsSignalGenerator(BaseSignalGenerator[NewsConfig]):
    """One signal per new article about a watched ticker, biased by its headline's sentiment."""

    name: ClassVar[str] = "news_sentiment"
    signal_type: ClassVar[SignalType] = SignalType.NEWS
    config_model: ClassVar[type[GeneratorConfig]] = NewsConfig
    inputs: ClassVar[Literal["bars", "none", "news", "signals"]] = "news"
    description: ClassVar[str] = "Finnhub company-news headlines scored with VADER (offline)"

    def compute(self, data: Sequence[NewsItem], tick: Tick) -> list[Signal]:
        """Signals for the articles in `data` published within `lookback_days` before the tick.

        Pure. Articles of other tickers, from the future, or repeated are skipped; no articles
        gives no signal and a logged reason.
        """
        config = self.config
        items = list(data or ())
        if not items:
            self.log_insufficient(
                logging.INFO,
                reason="no news items",
                n_tickers=len(self.tickers),
            )
            return []
        watched = set(self.tickers)
        earliest = tick.now - timedelta(days=config.lookback_days)
        seen: set[tuple[str, str]] = set()
        signals: list[Signal] = []
        skipped = {"other_ticker": 0, "out_of_window": 0, "repeated": 0, "neutral": 0}
        for item in sorted(items, key=lambda i: (i.published_at, i.ticker, i.article_id)):
            key = (item.ticker, item.article_id)
            if watched and item.ticker not in watched:
                skipped["other_ticker"] += 1
            elif not earliest <= item.published_at <= tick.now:
                skipped["out_of_window"] += 1
            elif key in seen:
                skipped["repeated"] += 1
            else:
                seen.add(key)
                signal = self._signal(item, tick)
                if signal is None:
                    skipped["neutral"] += 1
                else:
                    signals.append(signal)
        if any(skipped.values()):
            log_event(
                logger,
                "news_items_skipped",
                logging.DEBUG,
                source=self.source,
                generator=self.name,
                **skipped,
            )
        return signals

    def _signal(self, item: NewsItem, tick: Tick) -> Signal | None:
        config = self.config
        text = (
            f"{item.headline}. {item.summary}"
            if config.use_summary and item.summary
            else item.headline
        )
        score = compound_score(text)
        if score >= config.neutral_band and score > 0:
            bias = Bias.BULLISH
        elif score <= -config.neutral_band and score < 0:
            bias = Bias.BEARISH
        else:
            bias = Bias.NEUTRAL
            if not config.emit_neutral:
                return None
        confidence = round(min(config.max_confidence, abs(score)), 4)
        ticker = item.ticker
        return self.ticker_signal(
            ticker,
            event_key=f"article:{item.article_id}",
            bias=bias,
            confidence=confidence,
            reasoning=f"headline sentiment {score:+.3f} (VADER compound): {item.headline}"[:2000],
            metadata={
                "article_id": item.article_id,
                "headline": item.headline[:500],
                "compound": score,
                "neutral_band": config.neutral_band,
                "provider": item.provider,
                "url": item.url[:1000],
                "published_at": item.published_at.isoformat(),
            },
            timestamp=tick.now,
            event_time=item.published_at,
        )
