"""When history is backfilled by itself (start-up, before a check) and for how many bars."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace
from typing import Any

import pytest

from signalgen.marketdata.backfill import backfill_off_reason, lookbacks
from signalgen.marketdata.store import BarRow, BarStore
from signalgen.settings import Settings
from signalgen.storage import Database


def spec(tickers: tuple[str, ...], lookback: int, inputs: str = "bars") -> Any:
    generator = SimpleNamespace(tickers=tickers, inputs=inputs, lookback=lambda: lookback)
    return SimpleNamespace(generator=generator)


def test_each_ticker_needs_the_longest_lookback_of_the_bar_generators_using_it() -> None:
    specs = {
        "golden": spec(("AAPL", "MSFT"), 205),
        "volatility": spec(("MSFT", "NVDA"), 21),
        "news": spec(("AAPL", "TSLA"), 500, inputs="news"),  # no bars: no history needed
        "mock": spec(("SPY",), 0),
    }
    assert lookbacks(specs) == {"AAPL": 205, "MSFT": 205, "NVDA": 21}


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in ("HISTORY_SOURCE", "SIGNALGEN_DEV"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_only_a_configured_history_source_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default source exists (stooq), but nothing reaches out unless HISTORY_SOURCE is set.
    unset = settings(monkeypatch)
    assert unset.history_source == "stooq"
    assert backfill_off_reason(unset) == "HISTORY_SOURCE is not set"
    assert backfill_off_reason(settings(monkeypatch, HISTORY_SOURCE="tiingo")) is None
    dev = settings(monkeypatch, HISTORY_SOURCE="stooq", SIGNALGEN_DEV="1")
    assert backfill_off_reason(dev) == "signalgen dev (sample data)"


def test_never_over_the_bundled_sample_bars(
    monkeypatch: pytest.MonkeyPatch, sqlite_db: Database
) -> None:
    configured = settings(monkeypatch, HISTORY_SOURCE="stooq")
    store = BarStore(sqlite_db)
    bar = BarRow(date(2025, 11, 28), 1.0, 2.0, 0.5, 1.5, 100)
    store.upsert_bars("AAPL", [bar], source="stooq-history")
    assert backfill_off_reason(configured, store) is None
    store.upsert_bars("SPY", [bar], source="sample")
    assert backfill_off_reason(configured, store) == "the bar store holds sample bars"
