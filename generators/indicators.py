"""Indicator kernels: pure NumPy over 2-D price arrays shaped (n_tickers, n_bars).

Every function is vectorised across tickers (no per-ticker Python loop) and NaN-aware: a window
that holds a NaN (a missing bar, a ticker not yet listed) yields NaN, and a comparison involving a
NaN is never a cross.

Live checks only look at the last few bars, so `sma(..., last=k)` computes just the last `k`
values from the tail that feeds them. Each value is an exact sum over its own window (no running
cumulative sum), so the value on a given bar is the same whether the array holds 205 bars or
5,000: a live check, a backtest and a look-ahead test all see identical numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

# numpy is imported where it computes: the delivery workers that load this registry never do.
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]
    BoolArray = npt.NDArray[np.bool_]


class CrossDirection(Enum):
    """Which way the fast line crosses the slow one."""

    #: fast <= slow on the previous bar, fast > slow on this one (golden cross).
    ABOVE = "above"
    #: fast >= slow on the previous bar, fast < slow on this one (death cross).
    BELOW = "below"


def _as_2d(values: npt.ArrayLike) -> FloatArray:
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D array (n_tickers, n_bars), got shape {array.shape}")
    return array


def sma(close: npt.ArrayLike, window: int, *, last: int | None = None) -> FloatArray:
    """Simple moving average of each row over `window` bars.

    Returns the values on the last `last` bars (all bars when None), shaped
    (n_tickers, min(last, n_bars)). Column j is the bar at position n_bars - width + j. A bar
    whose window starts before the data, or holds a NaN, is NaN.
    """
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    prices = _as_2d(close)
    n_rows, n_bars = prices.shape
    width = n_bars if last is None else max(0, min(last, n_bars))
    out = np.full((n_rows, width), np.nan)
    first_out = n_bars - width
    first_defined = max(first_out, window - 1)
    if first_defined < n_bars and n_rows:
        segment = prices[:, first_defined - window + 1 :]
        windows = sliding_window_view(segment, window, axis=1)
        out[:, first_defined - first_out :] = windows.sum(axis=2) / window
    return out


#: |fast - slow| at most this times max(|fast|, |slow|) is a tie. Two SMAs equal in exact
#: arithmetic (YHOO's 20- and 50-day SMAs are both 15.30 on 2012-06-13) can come out of a
#: floating-point sum a few ulps apart, which would be a spurious cross and hide the real one.
#: Summation error is below 1e-15 relative; genuine differences of SMAs of prices quoted to six
#: decimals exceed 1e-6 on every real history in tests/data/market: 1e-12 separates them widely.
TIE_RELATIVE_TOLERANCE = 1e-12


def detect_crosses(
    fast: npt.ArrayLike,
    slow: npt.ArrayLike,
    direction: CrossDirection,
    *,
    tie_tolerance: float = TIE_RELATIVE_TOLERANCE,
) -> BoolArray:
    """Where `fast` crosses `slow` between consecutive columns.

    Both arrays are (n_tickers, m); the result is (n_tickers, m - 1) and its column j says
    whether the cross happened on column j + 1: both lines defined on j and j + 1, and
    fast <= slow on j and fast > slow on j + 1 (ABOVE), or the mirror (BELOW). Values within
    `tie_tolerance` (relative) of each other are equal.
    """
    import numpy as np

    fast_a, slow_a = _as_2d(fast), _as_2d(slow)
    if fast_a.shape != slow_a.shape:
        raise ValueError(f"fast {fast_a.shape} and slow {slow_a.shape} differ in shape")
    defined = np.isfinite(fast_a) & np.isfinite(slow_a)
    both = defined[:, :-1] & defined[:, 1:]
    with np.errstate(invalid="ignore"):
        difference = fast_a - slow_a
        if tie_tolerance > 0:
            scale = np.maximum(np.abs(fast_a), np.abs(slow_a))
            difference = np.where(np.abs(difference) <= tie_tolerance * scale, 0.0, difference)
        before, after = difference[:, :-1], difference[:, 1:]
        if direction is CrossDirection.ABOVE:
            turned = (before <= 0) & (after > 0)
        else:
            turned = (before >= 0) & (after < 0)
    return both & turned


@dataclass(frozen=True)
class CrossScan:
    """The result of `scan_sma_crosses`: columns are bars `first_bar` .. n_bars - 1."""

    first_bar: int
    fast: FloatArray
    slow: FloatArray
    crossed: BoolArray


def scan_sma_crosses(
    close: npt.ArrayLike,
    fast_window: int,
    slow_window: int,
    direction: CrossDirection,
    *,
    last: int | None = None,
) -> CrossScan:
    """SMA crosses of every row on its last `last` bars (every bar when None).

    Computes only `last + 1` SMA values per row (the extra one is the bar before the window, which
    a cross on the window's first bar needs). `crossed[i, j]` is True when row i crosses on bar
    `first_bar + j`; `fast`/`slow` hold both SMAs on those bars.
    """
    import numpy as np

    prices = _as_2d(close)
    n_rows, n_bars = prices.shape
    width = n_bars if last is None else max(0, min(last, n_bars))
    needed = min(width + 1, n_bars)
    fast = sma(prices, fast_window, last=needed)
    slow = sma(prices, slow_window, last=needed)
    crossed = np.zeros((n_rows, needed), dtype=np.bool_)
    if needed > 1:
        crossed[:, 1:] = detect_crosses(fast, slow, direction)
    drop = needed - width
    return CrossScan(
        first_bar=n_bars - width,
        fast=fast[:, drop:],
        slow=slow[:, drop:],
        crossed=crossed[:, drop:],
    )
