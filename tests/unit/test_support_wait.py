"""tests.support.wait.wait_until: returns the first truthy value, times out loudly."""

from __future__ import annotations

import itertools

import pytest

from tests.support.wait import wait_until


def test_returns_the_first_truthy_value() -> None:
    calls = itertools.count(1)
    assert wait_until(lambda: next(calls) >= 3 and "ready", timeout=5, interval=0.001) == "ready"


def test_times_out_with_the_message_the_last_value_and_the_detail() -> None:
    with pytest.raises(
        AssertionError, match=r"^never ready: not within 0.05 s \(last value: \[\]; log tail\)$"
    ):
        wait_until(
            lambda: [],
            timeout=0.05,
            interval=0.01,
            message="never ready",
            detail=lambda: "log tail",
        )


def test_ignored_errors_are_retried_and_reported_others_propagate() -> None:
    def down() -> bool:
        raise ConnectionError("refused")

    with pytest.raises(AssertionError, match="last error: ConnectionError"):
        wait_until(down, timeout=0.05, interval=0.01, ignore=(ConnectionError,))
    empty: dict[str, bool] = {}
    with pytest.raises(KeyError):
        wait_until(lambda: empty["missing"], timeout=5, ignore=(ConnectionError,))
