"""Test helpers for daily bars: the real CSV files, seeded synthetic frames, and an independent
golden/death-cross reference written in plain Python (math.fsum), sharing no code with the kernel.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from generators.base import Bars

MARKET_DIR = Path(__file__).resolve().parent.parent / "data" / "market"
MARKET_FILES = sorted(MARKET_DIR.glob("*.csv"))


def read_closes(path: Path) -> tuple[list[date], list[float]]:
    """Dates and closes of a market CSV, read with the csv module only."""
    days: list[date] = []
    closes: list[float] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            days.append(date.fromisoformat(record["date"]))
            closes.append(float(record["close"]))
    return days, closes


def bars_from_closes(ticker: str, days: Sequence[date], closes: Sequence[float]) -> Bars:
    close = np.array([closes], dtype=np.float64)
    return Bars(
        tickers=(ticker,),
        dates=np.array(days, dtype="datetime64[D]"),
        open=close.copy(),
        high=close.copy(),
        low=close.copy(),
        close=close,
        volume=np.ones_like(close),
    )


def bars_from_matrix(
    tickers: Sequence[str],
    close: np.ndarray,
    first: date = date(2020, 1, 1),
) -> Bars:
    """Bars on consecutive calendar days starting at `first` from a (n_tickers, n_bars) matrix."""
    n_bars = close.shape[1]
    days = [first + timedelta(days=i) for i in range(n_bars)]
    close = np.asarray(close, dtype=np.float64)
    return Bars(
        tickers=tuple(tickers),
        dates=np.array(days, dtype="datetime64[D]"),
        open=close.copy(),
        high=close.copy(),
        low=close.copy(),
        close=close.copy(),
        volume=np.ones_like(close),
    )


def reference_sma(closes: Sequence[float], window: int) -> list[float | None]:
    """SMA by math.fsum over each full window; None where undefined or a window holds NaN."""
    out: list[float | None] = []
    for t in range(len(closes)):
        if t + 1 < window:
            out.append(None)
            continue
        chunk = closes[t + 1 - window : t + 1]
        out.append(None if any(math.isnan(x) for x in chunk) else math.fsum(chunk) / window)
    return out


def reference_crosses(
    closes: Sequence[float], short: int, long: int, above: bool = True
) -> list[int]:
    """Bar positions t where the short SMA crosses the long one (the issue's definition)."""
    fast, slow = reference_sma(closes, short), reference_sma(closes, long)
    found = []
    for t in range(1, len(closes)):
        f0, s0, f1, s1 = fast[t - 1], slow[t - 1], fast[t], slow[t]
        if f0 is None or s0 is None or f1 is None or s1 is None:
            continue
        if (above and f0 <= s0 and f1 > s1) or (not above and f0 >= s0 and f1 < s1):
            found.append(t)
    return found


def random_walk(n_tickers: int, n_bars: int, seed: int, volatility: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, volatility, (n_tickers, n_bars))
    return 50.0 * np.exp(np.cumsum(steps, axis=1))
