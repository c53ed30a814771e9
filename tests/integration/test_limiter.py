"""Two OS processes sharing the Redis limiter hammer the local Finnhub server; the server's own
arrival times must show no more than the limits in any window."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from bench.fakes.fake_finnhub import FakeFinnhub
from signalgen.marketdata.errors import RateLimitedError
from signalgen.marketdata.finnhub import FinnhubSource
from signalgen.marketdata.limiter import Limit, RedisRateLimiter

pytestmark = pytest.mark.integration

TOKEN = "limiter-test-token"
PER_SECOND = 5
PER_MINUTE = 20
LIMITS = [Limit(PER_MINUTE, 60.0), Limit(PER_SECOND, 1.0)]
KEY = "test:limiter:shared"


def hammer(redis_url: str, base_url: str, start_at: float, stop_at: float, results: Any) -> None:
    """A worker: call /quote as fast as the shared limiter allows until `stop_at`."""
    import redis

    limiter = RedisRateLimiter(redis.Redis.from_url(redis_url), LIMITS, key=KEY)
    source = FinnhubSource(TOKEN, limiter=limiter, base_url=base_url, timeout=5.0)
    time.sleep(max(0.0, start_at - time.time()))
    done = 0
    while (remaining := stop_at - time.time()) > 0:
        source.limiter_timeout = remaining
        try:
            source.quote("AAPL")
        except RateLimitedError:  # no slot before stop_at
            break
        done += 1
    results.put(done)


def most_in_any_window(times: list[float], window: float) -> int:
    """The largest number of `times` inside any half-open window [t, t + window)."""
    times = sorted(times)
    best, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - window:
            first += 1
        best = max(best, last - first + 1)
    return best


def test_most_in_any_window() -> None:
    assert most_in_any_window([0.0, 0.5, 0.99, 1.0, 1.2], 1.0) == 4  # [0.5, 1.5)
    assert most_in_any_window([0.0, 1.0, 2.0], 1.0) == 1
    assert most_in_any_window([], 1.0) == 0


def test_two_processes_stay_under_both_shared_limits(redis_url: str, redis_client: Any) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    with FakeFinnhub(token=TOKEN) as server:
        server.quotes["AAPL"] = {
            "c": 10.0,
            "h": 11.0,
            "l": 9.0,
            "o": 9.5,
            "pc": 9.8,
            "t": 1_700_000_000,
        }
        start_at = time.time() + 4.0  # both children imported and waiting by then
        stop_at = start_at + 6.0
        workers = [
            context.Process(
                target=hammer, args=(redis_url, server.base_url, start_at, stop_at, results)
            )
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert all(worker.exitcode == 0 for worker in workers)
        done = [results.get(timeout=5) for _ in workers]
        arrivals = server.timestamps("/quote")

    # The minute's budget was used up, by both workers, and nothing more reached the server.
    assert sum(done) == PER_MINUTE == len(arrivals)
    assert all(count > 0 for count in done)
    assert most_in_any_window(arrivals, 1.0) <= PER_SECOND
    assert most_in_any_window(arrivals, 60.0) <= PER_MINUTE
