"""Property-based fuzz of webhook payloads (signalgen/ingress/webhooks.py), the bytes a stranger
sends to the ingress: whatever the body, header or token, the checks return a bool and parsing
raises only `ValidationError` (answered 422); nothing else escapes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.external import ExternalSignalIn, TradingViewAlert
from signalgen.http.ingress import _json_object
from signalgen.ingress.webhooks import (
    external_signal,
    sign,
    signature_matches,
    token_matches,
    tradingview_signal,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
SECRET = b"s3cret-for-fuzz"

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)

TV_VALID = {
    "secret": "x",
    "ticker": "AAPL",
    "action": "buy",
    "price": 187.2,
    "alert_id": "a-1",
    "confidence": 0.7,
    "time": "2026-03-02T15:00:00Z",
}
EXT_VALID = {
    "tickers": ["AAPL"],
    "bias": "BULLISH",
    "confidence": 0.6,
    "reasoning": "r",
    "event_id": "e-1",
    "metadata": {"k": 1},
}


@st.composite
def near(draw: st.DrawFn, valid: dict[str, Any]) -> dict[str, Any]:
    data = dict(valid)
    for key in draw(st.lists(st.sampled_from(sorted(valid)), max_size=3, unique=True)):
        if draw(st.booleans()):
            data[key] = draw(values)
        else:
            data.pop(key)
    if draw(st.booleans()):
        data[draw(st.text(max_size=8))] = draw(values)
    return data


@FUZZ
@given(near(TV_VALID) | st.dictionaries(st.text(max_size=10), values, max_size=6))
def test_tradingview_alert(data: dict[str, Any]) -> None:
    token = data.get("secret")
    if isinstance(token, str):
        assert isinstance(token_matches(token, SECRET), bool)
    try:
        alert = TradingViewAlert.model_validate(data)
        signal = tradingview_signal(alert, "tv", NOW, 0.5)
    except ValidationError:
        return
    assert signal.tickers == (alert.ticker,)


@FUZZ
@given(near(EXT_VALID) | st.dictionaries(st.text(max_size=10), values, max_size=6))
def test_external_signal(data: dict[str, Any]) -> None:
    try:
        payload = ExternalSignalIn.model_validate(data)
        signal = external_signal(payload, "partner", NOW)
    except ValidationError:
        return
    assert set(signal.tickers) == set(payload.tickers)


@FUZZ
@given(
    body=st.binary(max_size=500),
    header=st.none() | st.text(max_size=80),
    token=st.text(max_size=60),
)
@example(body=b"{}", header="sha256=\udcff", token="\ud800")
@example(body=b"[" * 30_000, header="sha256=" + "0" * 64, token="")
def test_checks_and_body_never_raise(body: bytes, header: str | None, token: str) -> None:
    assert signature_matches(body, header, SECRET) is False or header == sign(body, SECRET)
    assert token_matches(token, SECRET) is (token == SECRET.decode())
    parsed = _json_object(body)  # what the router does first with the body: dict or a 422
    assert isinstance(parsed, dict) or parsed.status_code == 422


def test_signature_of_the_right_secret_matches() -> None:
    body = json.dumps(EXT_VALID).encode()
    assert signature_matches(body, sign(body, SECRET), SECRET)
    assert not signature_matches(body, sign(body, b"other"), SECRET)
