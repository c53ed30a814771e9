"""The NumPy kernels: SMA and the generic cross detector, against plain-Python references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from generators.indicators import CrossDirection, detect_crosses, scan_sma_crosses, sma
from tests.support.market import random_walk, reference_crosses, reference_sma


def with_gaps(close: np.ndarray, seed: int, fraction: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gappy = close.copy()
    gappy[rng.random(close.shape) < fraction] = np.nan
    return gappy


@pytest.mark.parametrize("window", [1, 3, 20, 50])
def test_sma_matches_fsum_reference_including_nan_windows(window: int) -> None:
    close = with_gaps(random_walk(4, 120, seed=window), seed=7)
    result = sma(close, window)
    assert result.shape == close.shape
    for row in range(close.shape[0]):
        expected = reference_sma(close[row].tolist(), window)
        for got, want in zip(result[row].tolist(), expected, strict=True):
            if want is None:
                assert math.isnan(got)
            else:
                assert got == pytest.approx(want, rel=1e-12)


def test_sma_tail_mode_equals_full_history_tail_exactly() -> None:
    close = with_gaps(random_walk(6, 400, seed=1), seed=2)
    full = sma(close, 50)
    for last in (1, 6, 60, 400, 1000):
        tail = sma(close, 50, last=last)
        width = min(last, 400)
        assert tail.shape == (6, width)
        np.testing.assert_array_equal(tail, full[:, 400 - width :])


def test_sma_window_longer_than_history_is_all_nan() -> None:
    close = random_walk(2, 10, seed=3)
    assert np.isnan(sma(close, 11)).all()
    assert np.isnan(sma(close, 11, last=3)).all()
    assert sma(close, 10)[:, -1] == pytest.approx(close.mean(axis=1))


def test_sma_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="window"):
        sma(np.ones((1, 5)), 0)
    with pytest.raises(ValueError, match="2-D"):
        sma(np.ones(5), 2)


def test_sma_does_not_mutate_its_input() -> None:
    close = random_walk(3, 60, seed=4)
    close.flags.writeable = False
    sma(close, 5)
    scan_sma_crosses(close, 5, 20, CrossDirection.ABOVE, last=5)


def test_detect_crosses_definition_edges() -> None:
    # columns:      0     1     2     3     4     5     6
    fast = np.array([[1.0, 2.0, 2.0, 3.0, 1.0, np.nan, 5.0]])
    slow = np.array([[2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]])
    up = detect_crosses(fast, slow, CrossDirection.ABOVE)
    down = detect_crosses(fast, slow, CrossDirection.BELOW)
    # 2->3 crosses up from equality; 1->2 lands on equality (not above); NaN on either side: no.
    assert up.tolist() == [[False, False, True, False, False, False]]
    # 3->1 crosses down; 2->2 (equal, equal) is neither.
    assert down.tolist() == [[False, False, False, True, False, False]]


def test_death_cross_is_the_mirror_of_golden_cross() -> None:
    close = random_walk(8, 300, seed=11)
    golden = scan_sma_crosses(close, 10, 30, CrossDirection.ABOVE)
    mirrored = scan_sma_crosses(-close, 10, 30, CrossDirection.BELOW)
    np.testing.assert_array_equal(golden.crossed, mirrored.crossed)
    death = scan_sma_crosses(close, 10, 30, CrossDirection.BELOW)
    assert not (golden.crossed & death.crossed).any()
    for row in range(8):
        assert np.flatnonzero(death.crossed[row]).tolist() == reference_crosses(
            close[row].tolist(), 10, 30, above=False
        )


@pytest.mark.parametrize(("short", "long"), [(5, 20), (10, 30)])
def test_full_scan_matches_reference_with_gaps(short: int, long: int) -> None:
    close = with_gaps(random_walk(10, 250, seed=short), seed=long, fraction=0.005)
    result = scan_sma_crosses(close, short, long, CrossDirection.ABOVE)
    assert result.first_bar == 0
    total = 0
    for row in range(10):
        expected = reference_crosses(close[row].tolist(), short, long)
        assert np.flatnonzero(result.crossed[row]).tolist() == expected
        total += len(expected)
    assert total > 10  # the data does cross: the comparison above is not vacuous


@pytest.mark.parametrize("last", [1, 2, 5, 30])
def test_tail_scan_equals_full_scan_on_its_bars(last: int) -> None:
    close = with_gaps(random_walk(40, 260, seed=last), seed=5, fraction=0.003)
    full = scan_sma_crosses(close, 10, 40, CrossDirection.ABOVE)
    tail = scan_sma_crosses(close, 10, 40, CrossDirection.ABOVE, last=last)
    assert tail.first_bar == 260 - last
    np.testing.assert_array_equal(tail.crossed, full.crossed[:, -last:])
    np.testing.assert_array_equal(tail.fast, full.fast[:, -last:])
    np.testing.assert_array_equal(tail.slow, full.slow[:, -last:])


def test_vectorised_scan_equals_row_by_row_scan() -> None:
    close = with_gaps(random_walk(30, 220, seed=9), seed=10, fraction=0.01)
    close[3, :150] = np.nan  # listed late
    close[4, 100:] = np.nan  # delisted
    together = scan_sma_crosses(close, 10, 40, CrossDirection.ABOVE, last=50)
    for row in range(30):
        alone = scan_sma_crosses(close[row : row + 1], 10, 40, CrossDirection.ABOVE, last=50)
        np.testing.assert_array_equal(alone.crossed[0], together.crossed[row])
        np.testing.assert_array_equal(alone.fast[0], together.fast[row])
    assert not together.crossed[4].any()


def test_scan_on_short_or_empty_history() -> None:
    assert scan_sma_crosses(np.ones((2, 0)), 2, 3, CrossDirection.ABOVE).crossed.shape == (2, 0)
    short = scan_sma_crosses(random_walk(2, 3, seed=1), 2, 3, CrossDirection.ABOVE, last=5)
    assert short.first_bar == 0
    assert short.crossed.shape == (2, 3)
    assert not short.crossed.any()
    none = scan_sma_crosses(np.ones((0, 10)), 2, 3, CrossDirection.ABOVE, last=5)
    assert none.crossed.shape == (0, 5)


def test_near_tie_of_the_smas_is_no_golden_cross() -> None:
    """Equal in exact arithmetic, a few ulps apart in floating point: a tie, not a cross."""
    from generators.indicators import CrossDirection, detect_crosses

    slow = np.array([[15.3, 15.3, 15.3]])
    fast = np.array([[15.29, 15.3 + 2e-15, 15.31]])
    assert detect_crosses(fast, slow, CrossDirection.ABOVE).tolist() == [[False, True]]
    assert detect_crosses(fast, slow, CrossDirection.ABOVE, tie_tolerance=0).tolist() == [
        [True, False]
    ]
