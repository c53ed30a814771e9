"""One rate limiter shared by every worker process: a sliding-window log in Redis.

Each granted call is a member of one sorted set scored by Redis's own clock (`TIME`, so the
workers' clocks do not matter). A Lua script checks every limit (e.g. 60 per minute and 30 per
second) and records the grant in one atomic step, so two workers can never both take the last
slot. A refusal comes back with how long until a slot frees, and `acquire` sleeps that long.

The provider counts calls when they arrive, not when we granted them; a request delayed between
grant and arrival (scheduling, network) can land closer to its successor than the window. Each
window is therefore widened by `guard_seconds` (default 0.1 s) to absorb that jitter.

The limits configured are a ceiling: the provider's real limit may be lower (a free account
under a paid plan's settings). The limiter adapts, AIMD-style, in a second Redis hash shared by
every worker: a 429 (`on_rate_limited`) halves the effective rate (at most once per
`cut_interval`, the shortest window, so one burst of refusals is one cut) and pauses every
worker for the provider's Retry-After (or the shortest window when it sent none); after a
hold-off of one longest window, each success (`on_success`) adds 1/rate, i.e. one call per
window per window of successes, until the configured rate is reached again.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from signalgen.settings import Settings

_MICROS = 1_000_000

#: KEYS[1]: the sorted set, KEYS[2]: the adaptation hash (rate, pause_until, last_cut).
#: ARGV: member, guard (µs), then (limit, window µs) pairs; the first limit is the one adapted.
#: Returns {1, 0} when granted, {0, µs until a slot frees} when refused.
_ACQUIRE_LUA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local pause = tonumber(redis.call('HGET', KEYS[2], 'pause_until') or '0')
if pause > now then
  return {0, pause - now}
end
local rate = tonumber(redis.call('HGET', KEYS[2], 'rate') or '0')
local factor = 1
if rate > 0 and rate < tonumber(ARGV[3]) then factor = rate / tonumber(ARGV[3]) end
local guard = tonumber(ARGV[2])
local longest = 0
for i = 3, #ARGV, 2 do
  local window = tonumber(ARGV[i + 1]) + guard
  if window > longest then longest = window end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - longest)
local wait = 0
for i = 3, #ARGV, 2 do
  local limit = math.max(1, math.floor(tonumber(ARGV[i]) * factor + 1e-9))
  local window = tonumber(ARGV[i + 1]) + guard
  local oldest_in_window = now - window + 1
  local count = redis.call('ZCOUNT', KEYS[1], oldest_in_window, '+inf')
  if count >= limit then
    local blocker = redis.call('ZRANGEBYSCORE', KEYS[1], oldest_in_window, '+inf',
                               'WITHSCORES', 'LIMIT', count - limit, 1)
    local until_free = tonumber(blocker[2]) + window - now
    if until_free > wait then wait = until_free end
  end
end
if wait > 0 then
  return {0, wait}
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.floor(longest / 1000) + 1000)
return {1, 0}
"""

#: KEYS[1]: the adaptation hash. ARGV: configured rate, floor, cut interval µs, pause µs, ttl ms.
#: Returns {1 when this call cut the rate, rate * 1000}.
_PENALIZE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate') or ARGV[1])
local last_cut = tonumber(redis.call('HGET', KEYS[1], 'last_cut') or '0')
local cut = 0
if now - last_cut >= tonumber(ARGV[3]) then
  rate = math.max(tonumber(ARGV[2]), rate / 2)
  redis.call('HSET', KEYS[1], 'rate', rate, 'last_cut', now)
  cut = 1
end
local pause_until = now + tonumber(ARGV[4])
local previous = tonumber(redis.call('HGET', KEYS[1], 'pause_until') or '0')
if pause_until > previous then redis.call('HSET', KEYS[1], 'pause_until', pause_until) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
return {cut, math.floor(rate * 1000)}
"""

#: KEYS[1]: the adaptation hash. ARGV: configured rate, hold-off µs. Returns rate * 1000 (0: full).
_RECOVER_LUA = """
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate') or '0')
if rate == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last_cut = tonumber(redis.call('HGET', KEYS[1], 'last_cut') or '0')
if now - last_cut < tonumber(ARGV[2]) then return math.floor(rate * 1000) end
rate = rate + 1 / rate
if rate >= tonumber(ARGV[1]) then
  redis.call('HDEL', KEYS[1], 'rate', 'last_cut')
  return 0
end
redis.call('HSET', KEYS[1], 'rate', rate)
return math.floor(rate * 1000)
"""


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `calls` calls in any `period_seconds`-long window."""

    calls: int
    period_seconds: float

    def __post_init__(self) -> None:
        if self.calls < 1 or self.period_seconds <= 0:
            raise ValueError(f"invalid limit {self.calls} per {self.period_seconds}s")


class RateLimiter(Protocol):
    """What a data source needs: a slot before each call; what the provider said after it."""

    def acquire(self, *, block: bool = True, timeout: float | None = None) -> bool: ...

    def on_rate_limited(self, retry_after: float | None = None) -> bool:
        """The provider answered 429: slow every worker down. True when the rate was cut."""
        ...

    def on_success(self) -> None:
        """A call went through: recover towards the configured rate."""
        ...


class RedisRateLimiter:
    """All limits at once, shared by every process using the same Redis and `key`.

    `acquire(block=True, timeout=None)` waits for a slot (forever when `timeout` is None) and
    returns True, or False when `timeout` seconds passed (or at once with `block=False`).
    """

    def __init__(
        self,
        client: Any,
        limits: Sequence[Limit],
        *,
        key: str = "signalgen:ratelimit:finnhub",
        guard_seconds: float = 0.1,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not limits:
            raise ValueError("a rate limiter needs at least one limit")
        self.client = client
        self.limits = tuple(limits)
        self.key = key
        self.guard_seconds = guard_seconds
        self._sleep = sleep
        self._monotonic = monotonic
        self.adapt_key = f"{key}:adapt"
        self._script = client.register_script(_ACQUIRE_LUA)
        self._penalize = client.register_script(_PENALIZE_LUA)
        self._recover = client.register_script(_RECOVER_LUA)
        self._limit_args: list[int] = []
        for limit in self.limits:
            self._limit_args += [limit.calls, round(limit.period_seconds * _MICROS)]

    def try_acquire(self) -> float:
        """Take a slot if one is free: 0.0 when taken, else seconds until one frees."""
        granted, wait_micros = self._script(
            keys=[self.key, self.adapt_key],
            args=[uuid.uuid4().hex, round(self.guard_seconds * _MICROS), *self._limit_args],
        )
        return 0.0 if int(granted) == 1 else max(int(wait_micros), 1) / _MICROS

    def acquire(self, *, block: bool = True, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else self._monotonic() + timeout
        while True:
            wait = self.try_acquire()
            if wait == 0.0:
                return True
            if not block:
                return False
            if deadline is not None:
                remaining = deadline - self._monotonic()
                if remaining <= 0:
                    return False
                wait = min(wait, remaining)
            # A little jitter so waiting workers do not all retry on the same microsecond.
            self._sleep(wait + random.uniform(0, 0.005))  # noqa: S311 (not cryptographic)

    # -- adaptation (AIMD) -------------------------------------------------------------------

    @property
    def _shortest(self) -> float:
        return min(limit.period_seconds for limit in self.limits)

    @property
    def _longest(self) -> float:
        return max(limit.period_seconds for limit in self.limits)

    def on_rate_limited(self, retry_after: float | None = None) -> bool:
        pause = self._shortest if retry_after is None else min(max(retry_after, 0.0), 3600.0)
        cut, _ = self._penalize(
            keys=[self.adapt_key],
            args=[
                self.limits[0].calls,
                1,
                round(self._shortest * _MICROS),
                round(pause * _MICROS),
                round(max(3600.0, 10 * self._longest) * 1000),
            ],
        )
        return int(cut) == 1

    def on_success(self) -> None:
        self._recover(
            keys=[self.adapt_key],
            args=[self.limits[0].calls, round(self._longest * _MICROS)],
        )

    def effective_rate(self) -> float:
        """Calls per first window currently granted (the configured ones when not cut)."""
        raw = self.client.hget(self.adapt_key, "rate")
        return float(raw) if raw is not None else float(self.limits[0].calls)

    def reset(self) -> None:
        """Forget every grant and adaptation (tests, or an operator after changing plans)."""
        self.client.delete(self.key, self.adapt_key)

    @classmethod
    def for_finnhub(cls, settings: Settings, client: Any, **kwargs: Any) -> RedisRateLimiter:
        """The limiter of the Finnhub account in `settings`: its per-minute and per-second caps.

        The key names the account by a hash of its API key (never the key itself), so workers
        on one account share one budget and a new key starts afresh.
        """
        secret = settings.finnhub_api_key.get_secret_value() if settings.finnhub_api_key else ""
        account = hashlib.sha256(secret.encode()).hexdigest()[:12]
        limits = [
            Limit(settings.finnhub_calls_per_minute, 60.0),
            Limit(settings.finnhub_calls_per_second, 1.0),
        ]
        return cls(client, limits, key=f"signalgen:ratelimit:finnhub:{account}", **kwargs)


def memory_rate_limiter(limits: Sequence[Limit], **kwargs: Any) -> RedisRateLimiter:
    """The same limiter on an in-process fakeredis (same Lua script): for tests and one process."""
    import fakeredis

    return RedisRateLimiter(fakeredis.FakeRedis(), limits, **kwargs)
