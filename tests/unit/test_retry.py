"""Back-off: transient errors retried with growing, jittered pauses; permanent ones never."""

from __future__ import annotations

import pytest

from signalgen.marketdata.errors import (
    EntitlementError,
    RateLimitedError,
    TransientProviderError,
)
from signalgen.marketdata.retry import RetryPolicy, call_with_retry


class Flaky:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "answer"


def test_transient_errors_back_off_exponentially_with_jitter() -> None:
    slept: list[float] = []
    fn = Flaky(
        TransientProviderError("timeout"),
        RateLimitedError("429"),
        TransientProviderError("timeout"),
    )
    policy = RetryPolicy(attempts=4, base_delay=1.0, max_delay=30.0)
    assert call_with_retry(fn, policy, sleep=slept.append, rng=lambda: 0.5) == "answer"
    assert fn.calls == 4
    assert slept == [0.75, 1.5, 3.0]  # caps 1, 2, 4; halfway between cap/2 and cap


def test_jitter_stays_between_half_and_whole_cap() -> None:
    policy = RetryPolicy(base_delay=2.0, max_delay=5.0)
    assert policy.delay(1, lambda: 0.0) == 1.0
    assert policy.delay(1, lambda: 1.0) == 2.0
    assert policy.delay(10, lambda: 1.0) == 5.0  # capped


def test_gives_up_after_the_last_attempt() -> None:
    slept: list[float] = []
    fn = Flaky(*(TransientProviderError("timeout") for _ in range(5)))
    with pytest.raises(TransientProviderError):
        call_with_retry(fn, RetryPolicy(attempts=3), sleep=slept.append)
    assert fn.calls == 3 and len(slept) == 2


def test_permanent_errors_are_not_retried() -> None:
    slept: list[float] = []
    fn = Flaky(EntitlementError("paid plan"))
    with pytest.raises(EntitlementError):
        call_with_retry(fn, sleep=slept.append)
    assert fn.calls == 1 and slept == []


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    slept: list[float] = []
    fn = Flaky(RateLimitedError("429", retry_after=7.0), RateLimitedError("429", retry_after=99))
    call_with_retry(
        fn, RetryPolicy(base_delay=0.1, max_delay=10.0), sleep=slept.append, rng=lambda: 0.0
    )
    assert slept == [7.0, 10.0]
