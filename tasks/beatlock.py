"""A single active beat for hot standby: `celery -A tasks beat -S tasks.beatlock:LockedScheduler`
(or `BEAT_LOCK=1` in the environment, which sets `beat_scheduler` in celeryconfig).

Two plain beats are already harmless (aligned slots, stable signal ids, claims in PostgreSQL), but
they send every task twice. With this scheduler any number of beats may run; only the one holding
a Redis lock (`SET NX PX`, a random token, TTL `BEAT_LOCK_TTL_SECONDS`, default 30) sends. It
renews the lock every third of the TTL; a beat that dies stops renewing and a standby takes over
within one TTL; a beat that stops cleanly releases the lock at once. The lock is an optimisation,
not the guarantee: if a stalled holder and its successor overlap for a moment, the claims absorb
what both send, as they do for two plain beats.

The lock lives in `REDIS_URL` (or the Redis broker). While Redis is unreachable no beat holds it
and none sends; on a Redis broker nothing could be sent then anyway.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any

from celery.beat import PersistentScheduler

from signalgen.logs import log_event, redact

logger = logging.getLogger("tasks.beatlock")

LOCK_KEY = "signalgen:beat:lock"

#: Renew the lock's TTL if we hold it (the token is ours). Returns 1 when renewed.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class LockedScheduler(PersistentScheduler):  # type: ignore[misc]
    """PersistentScheduler that sends only while it holds the beat lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lock_ttl = float(os.environ.get("BEAT_LOCK_TTL_SECONDS", "30"))
        if not self.lock_ttl > 0:
            raise ValueError("BEAT_LOCK_TTL_SECONDS must be positive")
        self.lock_token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.holding = False
        self._checked_at = 0.0
        self._redis: Any = None
        super().__init__(*args, **kwargs)

    @property
    def renew_every(self) -> float:
        return self.lock_ttl / 3

    def _client(self) -> Any:
        if self._redis is None:
            import redis

            from signalgen.settings import get_settings

            self._redis = redis.Redis.from_url(
                get_settings().effective_redis_url, socket_timeout=2, socket_connect_timeout=2
            )
        return self._redis

    def hold_lock(self) -> bool:
        """Take or renew the lock (at most every `renew_every` seconds). True while we hold it."""
        now = time.monotonic()
        if self.holding and now - self._checked_at < self.renew_every:
            return True
        ttl_ms = int(self.lock_ttl * 1000)
        try:
            client = self._client()
            if self.holding:
                held = bool(client.eval(_RENEW, 1, LOCK_KEY, self.lock_token, ttl_ms))
            else:
                held = bool(client.set(LOCK_KEY, self.lock_token, nx=True, px=ttl_ms))
        except Exception as exc:
            log_event(
                logger,
                "beat_lock_unavailable",
                logging.WARNING,
                reason=redact(f"{type(exc).__name__}: {exc}"),
            )
            held = False
        self._checked_at = now
        if held != self.holding:
            log_event(
                logger,
                "beat_lock_acquired" if held else "beat_lock_lost",
                logging.WARNING,
                token=self.lock_token,
            )
            if held:
                self._heap = None  # rebuild from the schedule: send what is due now
        self.holding = held
        return held

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.hold_lock():
            return min(self.renew_every, 1.0)
        delay: float = super().tick(*args, **kwargs)
        # Wake up in time to renew, whatever the next entry's due time.
        return min(delay, self.renew_every)

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.holding and self._redis is not None:
                try:
                    self._redis.eval(_RELEASE, 1, LOCK_KEY, self.lock_token)
                except Exception as exc:  # it expires by its TTL anyway
                    log_event(
                        logger,
                        "beat_lock_not_released",
                        logging.WARNING,
                        reason=f"{type(exc).__name__}",
                    )
                self.holding = False
