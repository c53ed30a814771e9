"""`wait_until`: the suite's one way to wait for something to happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.2,
    message: str = "condition",
    detail: Callable[[], object] | None = None,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """Call `predicate` every `interval` seconds until it returns a truthy value; return that.

    Once `timeout` seconds have passed, raises AssertionError with `message`, the last value and,
    when given, `detail()` (the state that explains the wait, e.g. a log tail). Exceptions of the
    `ignore` types (e.g. a service still starting) count as a falsy try and are reported on
    timeout; any other exception propagates at once. The predicate is called at least once, and
    once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        error: Exception | None = None
        value: T | None = None
        try:
            value = predicate()
        except ignore as exc:
            error = exc
        if error is None and value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            last = f"last error: {error!r}" if error is not None else f"last value: {value!r}"
            extra = "" if detail is None else f"; {detail()}"
            raise AssertionError(f"{message}: not within {timeout} s ({last}{extra})") from error
        time.sleep(min(interval, remaining))
