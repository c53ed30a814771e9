"""The pure pieces behind issue 10's robust reads, safe error bodies and login throttling."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from schemas.api import PipelineCreate
from schemas.external import EventWindow, TradingViewAlert, WebhooksConfig
from schemas.text import refuse_surrogates, surrogate_path
from signalgen.interfaces.http.queries import (
    InvalidCursor,
    encode_cursor,
    int_cursor,
    time_id_cursor,
)
from signalgen.interfaces.http.safejson import TOO_DEEP, json_safe
from signalgen.interfaces.http.throttle import FailureWindow, address_bucket, key_bucket, over_limit
from signalgen.ops.dashboard import days_before, finite_json, score

NOW = datetime(2026, 3, 2, 15, tzinfo=UTC)


def test_json_safe_always_encodes_and_keeps_what_was_fine() -> None:
    fine = {"a": [1, 2.5, "é", None, True], "b": {"c": "d"}}
    assert json_safe(fine) == fine
    hostile = {
        "\ud800": [float("nan"), float("-inf"), "x\udfff", 10**5000, b"\xff", ValueError("v")]
    }
    safe = json_safe(hostile)
    text = json.dumps(safe, allow_nan=False, ensure_ascii=False).encode("utf-8")
    assert json.loads(text) == {
        "\\ud800": ["nan", "-inf", "x\\udfff", "(integer too large)", "\ufffd", "v"]
    }
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    assert TOO_DEEP in json.dumps(json_safe(deep))


def test_surrogates_are_found_at_any_depth_and_pairs_are_fine() -> None:
    deep: object = "\ud800"
    for n in range(3000):
        deep = {"k": [deep]} if n % 2 else [deep]
    assert surrogate_path(deep) is not None
    assert surrogate_path({"a": ["ok", {"b": "x\udc00"}]}) == "a[1].b"
    assert surrogate_path({"a": {"\ud800": 1}}) == "a.<key>"
    assert (
        surrogate_path(
            {
                "emoji": "\U0001f680",
                "pair": "\ud83d\ude80".encode("utf-16", "surrogatepass").decode("utf-16"),
            }
        )
        is None
    )
    with pytest.raises(ValueError, match="surrogate at name"):
        refuse_surrogates({"name": "\ud800"})
    with pytest.raises(ValidationError) as caught:
        PipelineCreate.model_validate(
            {"name": "ok", "trigger_mode": "periodic", "schedule": {"crontab": "\udfff"}}
        )
    assert caught.value.errors()[0]["loc"] == ("schedule",)


def test_event_window_bounds_times_only_when_given() -> None:
    window = WebhooksConfig().event_window(NOW)
    context = {"window": window}
    alert = {"secret": "s", "ticker": "AAPL", "action": "buy"}
    assert TradingViewAlert.model_validate({**alert, "time": NOW.isoformat()}, context=context)
    for when in (
        "0001-01-01T00:00:00Z",
        "9999-12-31T00:00:00Z",
        (NOW + timedelta(days=2)).isoformat(),
    ):
        with pytest.raises(ValidationError) as caught:
            TradingViewAlert.model_validate({**alert, "time": when}, context=context)
        assert caught.value.errors()[0]["loc"] == ("time",)
        TradingViewAlert.model_validate({**alert, "time": when})  # no context: no bound
    unbounded = EventWindow(NOW, None, None)
    assert unbounded.check(datetime(1, 1, 1, tzinfo=UTC)) == datetime(1, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationError):  # before year 1 once in UTC: a 422, not an overflow
        TradingViewAlert.model_validate({**alert, "time": "0001-01-01T00:00:00+01:00"})


def test_cursors_out_of_range_are_invalid() -> None:
    assert int_cursor(encode_cursor(2**63 - 1)) == 2**63 - 1
    assert int_cursor(encode_cursor(-(2**63))) == -(2**63)
    for value in (2**63, -(2**63) - 1, "1" * 25, "x"):
        with pytest.raises(InvalidCursor):
            int_cursor(encode_cursor(value))
    moment, _ = time_id_cursor(encode_cursor(datetime(1, 1, 1, tzinfo=UTC), "0" * 32))
    assert moment == datetime(1, 1, 1, tzinfo=UTC)
    for bad in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-01T00:00:00"):
        with pytest.raises(InvalidCursor):
            time_id_cursor(encode_cursor(bad, "0" * 32))


def test_dashboard_arithmetic_at_the_ends_of_time_and_of_floats() -> None:
    assert days_before(date(1, 1, 5), 10) == date.min
    assert days_before(date(2026, 1, 11), 10) == date(2026, 1, 1)
    assert score("BULLISH", 0.0, 10.0) is None
    assert score("BULLISH", 1e-308, 1e308) is None  # the ratio overflows to infinity
    assert score("BEARISH", float("nan"), 1.0) is None
    assert score("BULLISH", 100.0, 110.0) == (True, pytest.approx(0.1))  # type: ignore[comparison-overlap]
    assert finite_json({"a": [float("inf"), 1.5], "b": math.nan}) == {"a": [None, 1.5], "b": None}


def test_login_buckets_and_windows() -> None:
    assert address_bucket("203.0.113.9") == "203.0.113.9"
    assert address_bucket("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert address_bucket("2001:db8:1:2:ffff::1") == address_bucket("2001:db8:1:2::9")
    assert address_bucket("::ffff:198.51.100.7") == "198.51.100.7"
    assert address_bucket(None) == "unknown"
    assert address_bucket("testclient") == "testclient"
    assert key_bucket("sg_AbCdEfGhIjKlMn") == "sg_AbCdEfG"
    odd = key_bucket("\ud800 {}*\n")
    assert odd.startswith("h-") and odd.isascii()
    window = FailureWindow("api", 60, 1_000_000.5)
    assert window.key("address", "1.2.3.4") == "signalgen:auth:fail:api:address:1.2.3.4:16666"
    assert window.retry_after == 60 * 16667 - 1_000_000  # 20 s, rounded up from 19.5
    assert over_limit([None, 19], [20, 20]) is False
    assert over_limit([20, 0], [20, 20]) is True
    assert over_limit([500], [0]) is False  # a limit of 0 is off
