"""Property-based fuzz of webhook payloads (signalgen/ingress/webhooks.py), the bytes a stranger
sends to the ingress: whatever the body, header or token, the checks return a bool and parsing
raises only `ValidationError` (answered 422); nothing else escapes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import JSONResponse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.external import ExternalSignalIn, TradingViewAlert
from signalgen.ingress.webhooks import (
    external_signal,
    sign,
    signature_matches,
    token_matches,
    tradingview_signal,
)
from signalgen.interfaces.http.ingress import _json_object

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


# -- hostile text: surrogates, NaN/Infinity, huge integers, deep nesting ---------------------

#: Text with lone surrogates mixed in (hypothesis leaves them out of `st.text()` by default).
hostile_text = st.text(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters(), max_size=12
)
hostile_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63, -(2**63) - 1, 10**300, 10**4000])
    | st.floats()  # NaN and infinities included
    | hostile_text
    | st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59.999999-01:00",
            "9999-12-31T23:59:59Z",
        ]
    )
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=8,
)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def hostile_json(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    """JSON text near `valid`, as a hostile sender writes it: Python's writer with NaN and
    Infinity, surrogates as `\\udXXX` escapes, and perhaps an array nested `depth` deep."""
    data: dict[str, Any] = dict(valid)
    for key in draw(st.lists(st.sampled_from(sorted(valid)), max_size=3, unique=True)):
        data[key] = draw(hostile_values)
    if draw(st.booleans()):
        data[draw(hostile_text)] = draw(hostile_values)
    text = json.dumps(data, allow_nan=True)
    depth = draw(st.none() | st.integers(min_value=1, max_value=3000))
    if depth is not None:
        text = text[:-1] + (", " if data else "") + f'"deep": {nested(depth)}}}'
    return text.encode("utf-8")


@FUZZ
@given(hostile_json(TV_VALID) | hostile_json(EXT_VALID))
def test_hostile_bodies_are_a_dict_or_a_422_and_validate_or_refuse(body: bytes) -> None:
    from schemas.external import WebhooksConfig

    parsed = _json_object(body)
    if not isinstance(parsed, dict):
        assert parsed.status_code == 422
        assert json.loads(bytes(parsed.body))  # the 422 itself encodes
        return
    window = {"window": WebhooksConfig().event_window(NOW)}
    signals = []
    try:
        alert = TradingViewAlert.model_validate(parsed, context=window)
        signals.append(tradingview_signal(alert, "tv", NOW, 0.5))
    except ValidationError:
        pass
    try:
        payload = ExternalSignalIn.model_validate(parsed, context=window)
        signals.append(external_signal(payload, "partner", NOW))
    except ValidationError:
        pass
    for signal in signals:  # what was accepted can be stored and published: strict UTF-8 JSON
        json.loads(signal.to_json().encode("utf-8"))


def test_depth_scan_counts_what_the_parser_sees() -> None:
    from signalgen.ingress.webhooks import json_depth

    assert json_depth(b'{"a": [1, {"b": "[[[[{{{{"}], "c": "\\"[["}', 32) == 3
    assert json_depth(nested(500).encode(), 32) == 33  # stops counting past the limit
    assert isinstance(_json_object(nested(32).encode(), 32), JSONResponse)  # a list: 422
    assert _json_object(b'{"a": ' + nested(31).encode() + b"}", 32) == {"a": json.loads(nested(31))}
    refused = _json_object(b'{"a": ' + nested(32).encode() + b"}", 32)
    assert isinstance(refused, JSONResponse) and b"deeper than 32" in refused.body


@FUZZ
@given(value=hostile_values)
def test_depth_scan_equals_the_real_depth_of_any_json(value: Any) -> None:
    from signalgen.ingress.webhooks import json_depth

    def depth(item: Any) -> int:
        if isinstance(item, dict):
            return 1 + max((depth(v) for v in item.values()), default=0)
        if isinstance(item, list):
            return 1 + max((depth(v) for v in item), default=0)
        return 0

    assert json_depth(json.dumps(value).encode(), 1000) == depth(value)


# -- the bus intake decoder ------------------------------------------------------------------

SIGNAL_VALID = {
    "signal_id": "0b7e1d9c-4f5a-4c39-9a0e-3a8d3f8b6c11",
    "signal_type": "mock",
    "tickers": ["AAPL"],
    "bias": {"AAPL": {"ticker": "AAPL", "bias": "BULLISH", "confidence": 0.7}},
    "metadata": {"k": 1},
    "timestamp": "2026-03-02T15:00:00Z",
    "event_time": "2026-03-02T15:00:00Z",
    "source": "fuzz",
}


@FUZZ
@given(
    body=hostile_json(SIGNAL_VALID) | st.binary(max_size=300),
    content_type=st.none() | st.sampled_from(["application/json", "text/plain", "x/\ud800"]),
    headers=st.dictionaries(hostile_text, hostile_values, max_size=3),
)
@example(
    body=json.dumps({**SIGNAL_VALID, "timestamp": "0001-01-01T00:00:00+01:00"}).encode(),
    content_type="application/json",
    headers={},
)
def test_bus_intake_decodes_or_refuses_any_message(
    body: bytes, content_type: str | None, headers: dict[str, Any]
) -> None:
    from dispatcher.intake import InvalidSignal, decode_envelope, make_envelope

    envelope = make_envelope(body, content_type=content_type, headers=headers)
    json.dumps(envelope, allow_nan=False)  # the task argument is strict JSON
    try:
        delivery = decode_envelope(envelope, now=NOW)
    except InvalidSignal as exc:
        assert exc.reason
        return
    json.loads(delivery.signal.to_json().encode("utf-8"))
