"""Retry transient provider errors with exponential back-off and jitter; nothing else is retried."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from signalgen.marketdata.errors import TransientProviderError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`attempts` tries in all; the pause before try k+1 is drawn from [cap/2, cap] where
    cap = min(max_delay, base_delay * 2**(k-1)) ("equal jitter": never zero, never in step)."""

    attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError(f"invalid retry policy {self}")

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """The pause after failed try number `attempt` (1-based)."""
        cap = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return cap / 2 + rng() * cap / 2


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
    on_retry: Callable[[int, TransientProviderError, float], None] | None = None,
    time_left: Callable[[], float] | None = None,
) -> T:
    """`fn()`, tried again after `TransientProviderError` up to `policy.attempts` times in all.

    A `retry_after` the provider sent is honoured (up to `max_delay`). `on_retry(attempt, error,
    delay)` is called before each pause. Permanent errors, and transient ones that are not
    `retryable` (an open circuit), propagate at once; so does any error whose pause would not
    fit in `time_left()` seconds (the caller's time budget).
    """
    policy = policy or RetryPolicy()
    attempt = 1
    while True:
        try:
            return fn()
        except TransientProviderError as error:
            if attempt >= policy.attempts or not error.retryable:
                raise
            delay = policy.delay(attempt, rng)
            if error.retry_after is not None:
                delay = max(delay, min(error.retry_after, policy.max_delay))
            if time_left is not None and delay >= time_left():
                raise
            if on_retry is not None:
                on_retry(attempt, error, delay)
            sleep(delay)
            attempt += 1
