"""One rate limiter shared by every worker process: a sliding-window log in Redis.

Each granted call is a member of one sorted set scored by Redis's own clock (`TIME`, so the
workers' clocks do not matter). A Lua script checks every limit (e.g. 60 per minute and 30 per
second) and records the grant in one atomic step, so two workers can never both take the last
slot. A refusal comes back with how long until a slot frees, and `acquire` sleeps that long.

The provider counts calls when they arrive, not when we granted them; a request delayed between
grant and arrival (scheduling, network) can land closer to its successor than the window. Each
window is therefore widened by `guard_seconds` (default 0.1 s) to absorb that jitter.
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

#: KEYS[1]: the sorted set. ARGV: member, guard (µs), then (limit, window µs) pairs.
#: Returns {1, 0} when granted, {0, µs until a slot frees} when refused.
_ACQUIRE_LUA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local guard = tonumber(ARGV[2])
local longest = 0
for i = 3, #ARGV, 2 do
  local window = tonumber(ARGV[i + 1]) + guard
  if window > longest then longest = window end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - longest)
local wait = 0
for i = 3, #ARGV, 2 do
  local limit = tonumber(ARGV[i])
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


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `calls` calls in any `period_seconds`-long window."""

    calls: int
    period_seconds: float

    def __post_init__(self) -> None:
        if self.calls < 1 or self.period_seconds <= 0:
            raise ValueError(f"invalid limit {self.calls} per {self.period_seconds}s")


class RateLimiter(Protocol):
    """What a data source needs: a slot before each call."""

    def acquire(self, *, block: bool = True, timeout: float | None = None) -> bool: ...


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
        self._script = client.register_script(_ACQUIRE_LUA)
        self._limit_args: list[int] = []
        for limit in self.limits:
            self._limit_args += [limit.calls, round(limit.period_seconds * _MICROS)]

    def try_acquire(self) -> float:
        """Take a slot if one is free: 0.0 when taken, else seconds until one frees."""
        granted, wait_micros = self._script(
            keys=[self.key],
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

    def reset(self) -> None:
        """Forget every grant (tests, or an operator after changing plans)."""
        self.client.delete(self.key)

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
