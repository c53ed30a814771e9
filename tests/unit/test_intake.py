"""Envelopes: raw bytes in, a Signal or a dead-letter reason out; nothing ever unpickled."""

from __future__ import annotations

import base64
import json
import pickle
import uuid
from datetime import UTC, datetime

import pytest

from dispatcher.intake import InvalidSignal, decode_envelope, make_envelope

SIGNAL = {
    "signal_id": str(uuid.uuid4()),
    "signal_type": "mock",
    "tickers": ["AAPL"],
    "bias": {"AAPL": {"ticker": "AAPL", "bias": "BULLISH", "confidence": 0.5}},
    "timestamp": "2025-01-02T00:00:00Z",
    "event_time": "2025-01-02T00:00:00Z",
    "source": "t",
}


def test_json_signal_round_trip_with_headers() -> None:
    envelope = make_envelope(
        json.dumps(SIGNAL).encode(),
        content_type="application/json",
        headers={"x-published-at": 1735776000.5, "x-generation": 2},
    )
    json.dumps(envelope)  # JSON-safe: it is a Celery task argument
    delivery = decode_envelope(envelope)
    assert str(delivery.signal.signal_id) == SIGNAL["signal_id"]
    assert delivery.published_at == datetime.fromtimestamp(1735776000.5, UTC)
    assert delivery.generation == 2


def test_pickle_travels_as_base64_and_is_refused() -> None:
    raw = pickle.dumps({"x": 1})
    envelope = make_envelope(raw, content_type="application/x-python-serialize", headers={})
    assert envelope["body_encoding"] == "base64"
    assert base64.b64decode(envelope["body"]) == raw
    with pytest.raises(InvalidSignal) as info:
        decode_envelope(envelope)
    assert "application/x-python-serialize" in info.value.reason
    assert info.value.body == raw


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{nope", "invalid signal"),
        (json.dumps(dict(SIGNAL, tickers=["aapl"], bias={})).encode(), "tickers.0"),
        (json.dumps(dict(SIGNAL, signal_type="weather")).encode(), "signal_type"),
    ],
)
def test_invalid_bodies_named(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidSignal) as info:
        decode_envelope(make_envelope(body, content_type="application/json", headers=None))
    assert reason in info.value.reason
    assert info.value.body == body


def test_garbage_headers_do_not_break_decoding() -> None:
    envelope = make_envelope(
        json.dumps(SIGNAL),
        content_type=None,
        headers={"x-published-at": "soon", "x-generation": "two", "odd": object()},
    )
    delivery = decode_envelope(envelope)
    assert delivery.published_at is None and delivery.generation == 0
