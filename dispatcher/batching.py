"""When the intake hands raw signals over one by one, and when several at once.

Pure policy, no Celery: tasks/dispatch.py feeds it the raw messages as they arrive, with whether
the worker's pool is busy (as many tasks reserved as it has processes), and tells it when each
hand-over has settled (its message acked, rejected or requeued, which with late acks is when its
dispatch is over). Like Nagle's algorithm, it never waits on a timer:

- while the pool has an idle process, or none of the intake's hand-overs is unsettled, a
  message goes on at once, alone: at a light load nothing changes, not a millisecond;
- while the pool is busy and one of ours is in it, newcomers wait (they would have waited for a
  process anyway), and each hand-over that settles sends the waiting ones on together, up to
  `max_batch` messages and `max_bytes` of bodies (always at least one), as one
  `signals.dispatch_batch` request: at load, many signals' claims in one statement and one
  task's overhead. At most `limit` hand-overs are unsettled at once.

Nothing waits without one of ours in flight, so each waiting message goes on at that one's
settling at the latest. Nothing is acked early: a waiting message stays unacked on the broker's
channel, as a prefetched one does, and is restored with the channel's other unacked messages if
the worker dies. A batch is acked, or requeued, as a whole, when its request settles.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

M = TypeVar("M")

#: Signals per batch at most (`INTAKE_BATCH_MAX` is capped at this).
MAX_BATCH = 256
#: Bodies per batch at most (the batch is one task message; a retry republishes it).
MAX_BATCH_BYTES = 1 << 20


@dataclass
class IntakeBatcher(Generic[M]):
    """`offer` each arriving message and `settled` each finished hand-over; both return the
    hand-overs to make now, each a list of messages (one request each), in arrival order."""

    limit: int
    max_batch: int
    size: Callable[[M], int]
    max_bytes: int = MAX_BATCH_BYTES
    unsettled: int = 0
    waiting: deque[M] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.limit < 1 or self.max_batch < 1:
            raise ValueError(
                f"limit and max_batch must be at least 1 ({self.limit}, {self.max_batch})"
            )

    def offer(self, message: M, *, busy: bool = False) -> list[list[M]]:
        """`message` arrived; `busy`: the pool has no idle process."""
        with self._lock:
            self.waiting.append(message)
            if self.unsettled == 0 or (self.unsettled < self.limit and not busy):
                return self._release()
            return []

    def settled(self) -> list[list[M]]:
        with self._lock:
            self.unsettled = max(0, self.unsettled - 1)
            return self._release()

    def _release(self) -> list[list[M]]:
        out: list[list[M]] = []
        while self.waiting and self.unsettled < self.limit:
            batch = [self.waiting.popleft()]
            total = self.size(batch[0])
            while self.waiting and len(batch) < self.max_batch:
                nxt = self.size(self.waiting[0])
                if total + nxt > self.max_bytes:
                    break
                batch.append(self.waiting.popleft())
                total += nxt
            self.unsettled += 1
            out.append(batch)
        return out
