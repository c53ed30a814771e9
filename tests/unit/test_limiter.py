"""The shared limiter's Lua script on the in-memory variant (fakeredis runs the same Lua)."""

from __future__ import annotations

import threading

import pytest

from signalgen.marketdata.limiter import Limit, RedisRateLimiter, memory_rate_limiter


def test_refuses_beyond_the_limit_and_says_how_long_to_wait() -> None:
    limiter = memory_rate_limiter([Limit(3, 0.5)], guard_seconds=0)
    assert [limiter.acquire(block=False) for _ in range(4)] == [True, True, True, False]
    wait = limiter.try_acquire()
    assert 0 < wait <= 0.5


def test_blocking_acquire_waits_for_the_window_to_move() -> None:
    limiter = memory_rate_limiter([Limit(2, 0.2)], guard_seconds=0)
    assert limiter.acquire(block=False) and limiter.acquire(block=False)
    assert limiter.acquire(block=True, timeout=2.0)


def test_both_limits_apply_at_once() -> None:
    limiter = memory_rate_limiter([Limit(2, 0.2), Limit(3, 60.0)], guard_seconds=0)
    assert limiter.acquire(block=False) and limiter.acquire(block=False)
    assert not limiter.acquire(block=False)  # the short window is full
    assert limiter.acquire(timeout=2.0)  # ... until it moves on
    assert not limiter.acquire(timeout=0.3)  # now the long one is full
    assert limiter.try_acquire() > 50


def test_timeout_gives_up_and_sleep_is_injectable() -> None:
    slept: list[float] = []
    limiter = memory_rate_limiter([Limit(1, 60.0)], guard_seconds=0, sleep=slept.append)
    assert limiter.acquire(block=False)
    clock = iter([0.0, 0.0, 10.0, 10.0])
    limiter._monotonic = lambda: next(clock)
    assert limiter.acquire(timeout=5.0) is False
    assert len(slept) == 1 and 0 < slept[0] <= 5.0 + 0.01


def test_threads_sharing_one_limiter_never_exceed_it() -> None:
    limiter = memory_rate_limiter([Limit(5, 60.0)], guard_seconds=0)
    granted: list[bool] = []
    lock = threading.Lock()

    def grab() -> None:
        for _ in range(4):
            ok = limiter.acquire(block=False)
            with lock:
                granted.append(ok)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == 5


def test_guard_widens_the_window() -> None:
    limiter = memory_rate_limiter([Limit(1, 0.1)], guard_seconds=1.0)
    assert limiter.acquire(block=False)
    assert limiter.try_acquire() > 0.5


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        Limit(0, 1.0)
    with pytest.raises(ValueError):
        RedisRateLimiter(object(), [])
