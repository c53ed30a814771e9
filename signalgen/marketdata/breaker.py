"""Provider discipline shared by every worker through Redis: a circuit breaker and a negative cache.

`CircuitBreaker`: after `failures` consecutive transport failures (timeouts, refused
connections, 5xx) the circuit opens and calls are refused without a request for
`cooldown_seconds`; then one probe is let through (half-open). A probe that succeeds closes the
circuit; one that fails opens it for another cool-down. Its state is one Redis hash changed by
Lua scripts that read Redis's own clock, so every worker sees the same circuit and exactly one of
them sends the probe.

`NoDataCache` (negative cache): a ticker for which the provider has no data (a quote of all
zeros, empty candles, history that stays short) is not asked again until a back-off passes: the
first pause is `retry_seconds`, doubled on each empty answer up to `max_seconds`. The first empty
answer is the one to log (`NoDataEntry.strikes == 1`); later ones are quiet.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from signalgen.marketdata.errors import CircuitOpenError

_MICROS = 1_000_000

#: ARGV: probe lease µs. Returns {1, 0} closed, {2, 0} probe granted, {0, µs} refused.
_ALLOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until == 0 then return {1, 0} end
if now < open_until then return {0, open_until - now} end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
if now < probe_until then return {0, probe_until - now} end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[1]))
return {2, 0}
"""

#: ARGV: threshold, cool-down µs, ttl ms. Returns {1 when this failure opened it, failures}.
_FAILURE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
local opened = 0
if (open_until > 0 and now >= open_until) or
   (open_until == 0 and failures >= tonumber(ARGV[1])) then
  redis.call('HSET', KEYS[1], 'open_until', now + tonumber(ARGV[2]))
  redis.call('HDEL', KEYS[1], 'probe_until')
  opened = 1
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return {opened, failures}
"""

#: Returns 1 when the circuit was open (or half-open) and is now closed.
_SUCCESS_LUA = """
local was_open = redis.call('HEXISTS', KEYS[1], 'open_until')
redis.call('DEL', KEYS[1])
return was_open
"""


class CircuitBreaker:
    """One circuit per provider account, in Redis (`memory_breaker` for one process)."""

    def __init__(
        self,
        client: Any,
        *,
        key: str,
        failures: int = 3,
        cooldown_seconds: float = 60.0,
    ) -> None:
        if failures < 1 or cooldown_seconds <= 0:
            raise ValueError(f"invalid breaker: {failures} failures, {cooldown_seconds}s cool-down")
        self.client = client
        self.key = key
        self.failures = failures
        self.cooldown_seconds = cooldown_seconds
        self._allow = client.register_script(_ALLOW_LUA)
        self._failure = client.register_script(_FAILURE_LUA)
        self._success = client.register_script(_SUCCESS_LUA)

    @property
    def _cooldown_micros(self) -> int:
        return round(self.cooldown_seconds * _MICROS)

    def before_call(self, provider: str = "provider") -> bool:
        """Raise `CircuitOpenError` while the circuit is open; True when this call is the probe."""
        state, wait = self._allow(keys=[self.key], args=[self._cooldown_micros])
        if int(state) == 0:
            seconds = max(int(wait), 1) / _MICROS
            raise CircuitOpenError(
                f"{provider} circuit open after {self.failures} consecutive failures "
                f"(timeouts, refused connections or 5xx): no calls for {seconds:.1f}s more",
                retry_after=seconds,
            )
        return int(state) == 2

    def record_failure(self) -> bool:
        """Count a transport failure; True when it opened the circuit (tell the operator)."""
        ttl_ms = max(24 * 3600 * 1000, 4 * self._cooldown_micros // 1000)
        opened, _ = self._failure(
            keys=[self.key], args=[self.failures, self._cooldown_micros, ttl_ms]
        )
        return int(opened) == 1

    def record_success(self) -> bool:
        """The provider answered: close the circuit. True when it was open until now."""
        return int(self._success(keys=[self.key])) == 1

    def is_open(self) -> bool:
        return bool(self.client.hexists(self.key, "open_until"))

    def reset(self) -> None:
        self.client.delete(self.key)


def memory_breaker(**kwargs: Any) -> CircuitBreaker:
    """The same breaker on an in-process fakeredis (same Lua): one process, or tests."""
    import fakeredis

    kwargs.setdefault("key", "breaker")
    return CircuitBreaker(fakeredis.FakeRedis(), **kwargs)


# -- negative cache ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoDataEntry:
    """Why a ticker is not asked, until when, and how many empty answers in a row."""

    reason: str
    until: datetime
    strikes: int


class NoDataCache(Protocol):
    def blocked(self, provider: str, what: str, ticker: str, now: datetime) -> NoDataEntry | None:
        """The entry while its back-off runs (do not call), else None."""
        ...

    def record(
        self, provider: str, what: str, ticker: str, reason: str, now: datetime
    ) -> NoDataEntry: ...

    def clear(self, provider: str, what: str, ticker: str) -> bool:
        """Forget the ticker (data came back); True when it had an entry."""
        ...


@dataclass(frozen=True, slots=True)
class NoDataBackoff:
    """First pause `retry_seconds`, doubled per empty answer, never above `max_seconds`."""

    retry_seconds: float = 3600.0
    max_seconds: float = 86400.0

    def __post_init__(self) -> None:
        if self.retry_seconds <= 0 or self.max_seconds < self.retry_seconds:
            raise ValueError(
                f"invalid no-data back-off: first {self.retry_seconds}s, max {self.max_seconds}s"
            )

    def pause(self, strikes: int) -> float:
        return min(self.max_seconds, self.retry_seconds * 2.0 ** min(strikes - 1, 60))


class MemoryNoDataCache:
    """Per process (tests, or a source built without Redis)."""

    def __init__(self, backoff: NoDataBackoff | None = None) -> None:
        self.backoff = backoff or NoDataBackoff()
        self._entries: dict[tuple[str, str, str], NoDataEntry] = {}
        self._lock = threading.Lock()

    def blocked(self, provider: str, what: str, ticker: str, now: datetime) -> NoDataEntry | None:
        with self._lock:
            entry = self._entries.get((provider, what, ticker))
        return entry if entry is not None and entry.until > now else None

    def record(
        self, provider: str, what: str, ticker: str, reason: str, now: datetime
    ) -> NoDataEntry:
        with self._lock:
            previous = self._entries.get((provider, what, ticker))
            strikes = (previous.strikes if previous else 0) + 1
            entry = NoDataEntry(
                reason, now + timedelta(seconds=self.backoff.pause(strikes)), strikes
            )
            self._entries[(provider, what, ticker)] = entry
            return entry

    def clear(self, provider: str, what: str, ticker: str) -> bool:
        with self._lock:
            return self._entries.pop((provider, what, ticker), None) is not None


class RedisNoDataCache:
    """Shared by every worker: one hash per (provider, endpoint, ticker), kept a day past the
    longest back-off so the strikes survive between retries."""

    def __init__(
        self, client: Any, backoff: NoDataBackoff | None = None, *, prefix: str = "signalgen:nodata"
    ) -> None:
        self.client = client
        self.backoff = backoff or NoDataBackoff()
        self.prefix = prefix

    def _key(self, provider: str, what: str, ticker: str) -> str:
        return f"{self.prefix}:{provider}:{what}:{ticker}"

    def blocked(self, provider: str, what: str, ticker: str, now: datetime) -> NoDataEntry | None:
        raw = self.client.hgetall(self._key(provider, what, ticker))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "until" not in fields:  # a record() caught between its two writes
            return None
        until = datetime.fromisoformat(fields["until"])
        if until <= now:
            return None
        return NoDataEntry(fields.get("reason", ""), until, int(fields.get("strikes", "1")))

    def record(
        self, provider: str, what: str, ticker: str, reason: str, now: datetime
    ) -> NoDataEntry:
        key = self._key(provider, what, ticker)
        strikes = int(self.client.hincrby(key, "strikes", 1))
        entry = NoDataEntry(reason, now + timedelta(seconds=self.backoff.pause(strikes)), strikes)
        pipe = self.client.pipeline()
        pipe.hset(key, mapping={"reason": reason, "until": entry.until.isoformat()})
        pipe.expire(key, int(self.backoff.max_seconds) + 86400)
        pipe.execute()
        return entry

    def clear(self, provider: str, what: str, ticker: str) -> bool:
        return bool(self.client.delete(self._key(provider, what, ticker)))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
