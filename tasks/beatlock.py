"""Beat coordination in Redis: each schedule slot sent once, and (optionally) one active beat.

`SlotScheduler` (the default `beat_scheduler`) sends each slot of an aligned entry once, whatever
the number of beats and restarts. Beat's own record of what it sent (the `--schedule` file) is
local and written every few minutes: a beat killed or crashed, restarted with a fresh file
(`signalgen dev`, a container without its volume), a second beat, or a standby taking over would
send the current slot again (and the generator call its provider twice). So before sending, the
scheduler sets a marker `signalgen:beat:sent:<entry>:<interval>s:<slot number>` (`SET NX`, TTL to
the slot's end plus a minute); a beat that finds it set skips the slot (`beat_slot_already_sent`).
A send that fails removes its marker, so another beat (or the next start) may send the slot. With
Redis unreachable the scheduler sends anyway (at least once; the claims absorb a duplicate), logs
`beat_send_once_unavailable`, and asks Redis again after `MARKER_RETRY_SECONDS`.
`BEAT_SEND_ONCE=0` turns the markers off: each beat then sends every slot it finds due.

`LockedScheduler` adds a single active beat for hot standby: `celery -A tasks beat -S
tasks.beatlock:LockedScheduler` (or `BEAT_LOCK=1` in the environment, which sets
`beat_scheduler` in celeryconfig). Any number of beats may run; only the one holding a Redis lock
(`SET NX PX`, a random token, TTL `BEAT_LOCK_TTL_SECONDS`, default 30) sends. It renews the lock
every third of the TTL; a beat that dies stops renewing and a standby takes over within one TTL
(without sending again the slot its predecessor sent); a beat that stops cleanly releases the
lock at once. The lock and the markers are optimisations, not the guarantee: whatever is sent
twice is absorbed by stable signal ids and the claims in PostgreSQL.

Markers and lock live in `REDIS_URL` (or the Redis broker). While Redis is unreachable no beat
holds the lock and none sends; on a Redis broker nothing could be sent then anyway.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any

from celery.beat import PersistentScheduler
from celery.beat import logger as celery_beat_logger

from signalgen.logs import log_event, redact
from signalgen.settings import get_settings
from tasks.schedules import AlignedSchedule, SlotSend, plan_send

logger = logging.getLogger("tasks.beatlock")

LOCK_KEY = "signalgen:beat:lock"
#: Prefix of the send-once markers: `<prefix><entry>:<interval>s:<slot number>`.
SENT_KEY_PREFIX = "signalgen:beat:sent:"
#: After Redis failed, send without markers for this long before asking it again (a beat must
#: not wait on a dead Redis's timeouts for every entry).
MARKER_RETRY_SECONDS = 30.0


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


class SlotScheduler(PersistentScheduler):  # type: ignore[misc]
    """PersistentScheduler that sends each slot of an aligned entry once across beats and
    restarts, telling the task its slot (`plan_send`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.send_once = get_settings().beat_send_once
        self._markers_down_until = 0.0
        self._redis: Any = None
        super().__init__(*args, **kwargs)

    def _client(self) -> Any:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(
                get_settings().effective_redis_url, socket_timeout=2, socket_connect_timeout=2
            )
        return self._redis

    def mark_sent(self, send: SlotSend) -> bool | None:
        """Claim `send`'s slot: True (ours to send), False (already sent by some beat), None
        (unknown: markers off or Redis unreachable; send anyway)."""
        if not self.send_once or time.monotonic() < self._markers_down_until:
            return None
        try:
            return bool(
                self._client().set(
                    SENT_KEY_PREFIX + send.key, self.token, nx=True, ex=send.marker_ttl
                )
            )
        except Exception as exc:
            self._markers_down_until = time.monotonic() + MARKER_RETRY_SECONDS
            log_event(
                logger,
                "beat_send_once_unavailable",
                logging.WARNING,
                reason=redact(f"{type(exc).__name__}: {exc}"),
                retry_in_seconds=MARKER_RETRY_SECONDS,
            )
            return None

    def unmark(self, send: SlotSend) -> None:
        """Give the slot back (its send failed): another beat, or our next start, may send it."""
        try:
            self._client().eval(_RELEASE, 1, SENT_KEY_PREFIX + send.key, self.token)
        except Exception as exc:  # it expires after the slot anyway
            log_event(logger, "beat_slot_not_released", logging.WARNING, reason=type(exc).__name__)

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        schedule = entry.schedule
        if not isinstance(schedule, AlignedSchedule):
            super().apply_entry(entry, producer=producer)
            return
        send = plan_send(
            entry.name,
            entry.task,
            schedule,
            schedule.now(),
            kwargs=entry.kwargs,
            options=entry.options,
        )
        marked = self.mark_sent(send)
        if marked is False:
            log_event(
                logger,
                "beat_slot_already_sent",
                entry=entry.name,
                slot=send.slot_start.isoformat(),
            )
            return
        # The stored entry is left as it is: only this send carries the slot and its expiry.
        stamped = entry.__class__(**dict(entry, kwargs=send.kwargs, options=send.options))
        # Celery's own lines (`apply_entry`), which operators and the fault suite read.
        celery_beat_logger.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        try:
            self.apply_async(stamped, producer=producer, advance=False)
        except Exception as exc:
            celery_beat_logger.error("Message Error: %s", exc, exc_info=True)
            if marked:
                self.unmark(send)


class LockedScheduler(SlotScheduler):
    """SlotScheduler that sends only while it holds the beat lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lock_ttl = get_settings().beat_lock_ttl_seconds
        if not self.lock_ttl > 0:
            raise ValueError("BEAT_LOCK_TTL_SECONDS must be positive")
        self.holding = False
        self._checked_at = 0.0
        super().__init__(*args, **kwargs)

    @property
    def lock_token(self) -> str:
        return self.token

    @property
    def renew_every(self) -> float:
        return self.lock_ttl / 3

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
