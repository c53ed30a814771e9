"""The shared limiter's Lua script on the in-memory variant (fakeredis runs the same Lua)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

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


# -- adaptation to the provider's real limit (AIMD) ------------------------------------------------


def test_a_429_halves_the_shared_rate_once_per_burst_and_pauses_every_caller() -> None:
    limiter = memory_rate_limiter([Limit(20, 0.5)], guard_seconds=0)
    other = RedisRateLimiter(limiter.client, limiter.limits, key=limiter.key, guard_seconds=0)
    # A pause long enough that a loaded machine (xdist) still finds it running: with 0.3 s,
    # 0.3 s had passed between the cut and the other worker's look once, and it found none.
    assert limiter.on_rate_limited(retry_after=2.0)
    assert not other.on_rate_limited(retry_after=2.0)  # the same burst: no second cut
    assert limiter.effective_rate() == other.effective_rate() == 10.0
    wait = other.try_acquire()  # the pause is shared: another worker waits too
    assert 1.0 < wait <= 2.0
    assert other.acquire(timeout=4.0)
    # After the pause, only 10 of the configured 20 per window are granted.
    granted = 1 + sum(other.acquire(block=False) for _ in range(30))
    assert granted == 10


def test_without_retry_after_the_pause_is_the_shortest_window() -> None:
    limiter = memory_rate_limiter([Limit(60, 60.0), Limit(5, 2.0)], guard_seconds=0)
    limiter.on_rate_limited(None)
    assert 1.0 < limiter.try_acquire() <= 2.0  # the 2 s window, not the 60 s one


def test_successes_recover_the_rate_additively_after_one_window() -> None:
    limiter = memory_rate_limiter([Limit(4, 0.2)], guard_seconds=0)
    limiter.on_rate_limited(retry_after=0)
    assert limiter.effective_rate() == 2.0
    limiter.on_success()  # within the hold-off (one window after the cut): no change
    assert limiter.effective_rate() == 2.0
    limiter._sleep(0.25)
    limiter.on_success()
    assert limiter.effective_rate() == 2.5  # + 1/rate
    for _ in range(5):
        limiter.on_success()
    assert limiter.effective_rate() == 4.0  # back at the configured rate: the state is gone
    assert limiter.client.hget(limiter.adapt_key, "rate") is None


def test_the_rate_never_falls_below_one_call_per_window() -> None:
    limiter = memory_rate_limiter([Limit(2, 0.01)], guard_seconds=0)
    for _ in range(5):
        limiter.on_rate_limited(retry_after=0)
        limiter._sleep(0.02)
    assert limiter.effective_rate() == 1.0
    assert limiter.acquire(block=False)


# -- circuit breaker -------------------------------------------------------------------------------


def test_the_breaker_opens_after_consecutive_failures_and_lets_one_probe_through() -> None:
    from signalgen.marketdata.breaker import memory_breaker
    from signalgen.marketdata.errors import CircuitOpenError

    breaker = memory_breaker(failures=3, cooldown_seconds=0.3)
    assert breaker.before_call() is False
    assert not breaker.record_failure() and not breaker.record_failure()
    breaker.record_success()  # a success in between: not consecutive any more
    assert not breaker.record_failure() and not breaker.record_failure()
    assert breaker.record_failure()  # the third in a row opens it
    with pytest.raises(CircuitOpenError, match="circuit open after 3 consecutive") as caught:
        breaker.before_call()
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 0.3
    assert not caught.value.retryable
    time.sleep(0.35)
    assert breaker.before_call() is True  # half-open: this caller probes ...
    with pytest.raises(CircuitOpenError):
        breaker.before_call()  # ... and no one else meanwhile
    assert breaker.record_failure()  # the probe failed: open for another cool-down
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    time.sleep(0.35)
    assert breaker.before_call() is True
    assert breaker.record_success()  # the probe succeeded: closed
    assert breaker.before_call() is False and not breaker.is_open()


# -- negative cache --------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [False, True])
def test_no_data_back_off_doubles_up_to_its_maximum(shared: bool) -> None:
    import fakeredis

    from signalgen.marketdata.breaker import (
        MemoryNoDataCache,
        NoDataBackoff,
        NoDataCache,
        RedisNoDataCache,
    )

    backoff = NoDataBackoff(retry_seconds=3600, max_seconds=4 * 3600)
    cache: NoDataCache = (
        RedisNoDataCache(fakeredis.FakeRedis(), backoff) if shared else MemoryNoDataCache(backoff)
    )
    now = datetime(2024, 3, 8, 15, 0, tzinfo=UTC)
    assert cache.blocked("finnhub", "quote", "NOPE", now) is None
    pauses = []
    for _ in range(4):
        entry = cache.record("finnhub", "quote", "NOPE", "all zeros", now)
        pauses.append((entry.until - now) / timedelta(hours=1))
    assert pauses == [1, 2, 4, 4] and entry.strikes == 4
    blocked = cache.blocked("finnhub", "quote", "NOPE", now + timedelta(hours=3))
    assert blocked is not None and blocked.reason == "all zeros"
    assert cache.blocked("finnhub", "quote", "NOPE", now + timedelta(hours=4)) is None
    assert cache.blocked("finnhub", "candles", "NOPE", now) is None  # per endpoint
    assert cache.clear("finnhub", "quote", "NOPE")
    assert cache.record("finnhub", "quote", "NOPE", "again", now).strikes == 1
    with pytest.raises(ValueError, match="no-data back-off"):
        NoDataBackoff(retry_seconds=10, max_seconds=5)
