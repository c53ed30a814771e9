"""Property-based fuzz of the Signal parser and the dispatcher's intake (hypothesis).

Whatever bytes arrive, the parser raises only its documented exceptions: `ValidationError`
from `Signal.model_validate_json`, `InvalidSignal` from `decode_envelope`. Both inputs are
what a stranger with access to the exchange controls.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dispatcher.intake import MAX_SIGNAL_BYTES, InvalidSignal, decode_envelope, make_envelope
from schemas.signal import Signal
from tests.support.ops import make_signal

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)

VALID = json.loads(make_signal().to_json())
FIELDS = sorted(VALID)


@st.composite
def mutated_signals(draw: st.DrawFn) -> dict[str, Any]:
    """A valid signal with some fields replaced, dropped or added: near the valid space."""
    data = dict(VALID)
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        if draw(st.booleans()):
            data[key] = draw(json_values)
        else:
            data.pop(key)
    if draw(st.booleans()):
        data[draw(st.text(max_size=8))] = draw(json_values)
    return data


def _parse(raw: bytes | str) -> None:
    with contextlib.suppress(ValidationError):
        Signal.model_validate_json(raw)


@FUZZ
@given(st.binary(max_size=2000))
@example(b"[" * 50_000)
@example(b'{"metadata": ' + b"[" * 50_000 + b"}")
@example(b"\xff\xfe\x00")
def test_signal_parser_bytes(raw: bytes) -> None:
    _parse(raw)


@FUZZ
@given(mutated_signals())
def test_signal_parser_near_valid(data: dict[str, Any]) -> None:
    raw = json.dumps(data, allow_nan=True)
    _parse(raw)
    # Whatever validates must survive its own round trip unchanged (what replay resends).
    try:
        signal = Signal.model_validate_json(raw)
    except ValidationError:
        return
    assert Signal.model_validate_json(signal.to_json()) == signal


def test_valid_signal_still_parses() -> None:
    """The fuzz above starts from a signal the parser accepts (else it fuzzes nothing)."""
    assert Signal.model_validate_json(json.dumps(VALID)).signal_id is not None


content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "text/json",
        "application/x-python-serialize",
        "application/x-yaml",
        "text/plain",
        "",
    ]
) | st.text(max_size=20)


@FUZZ
@given(
    body=st.binary(max_size=3000) | mutated_signals().map(lambda d: json.dumps(d).encode()),
    content_type=content_types,
    headers=st.dictionaries(st.text(max_size=15), json_values, max_size=4),
)
def test_intake_refuses_or_accepts_never_crashes(
    body: bytes, content_type: str | None, headers: dict[str, Any]
) -> None:
    envelope = make_envelope(
        body, content_type=content_type, headers=headers, routing_key="signal.mock.X"
    )
    json.dumps(envelope)  # the envelope always travels as JSON
    try:
        delivery = decode_envelope(envelope)
    except InvalidSignal as exc:
        assert exc.reason and len(exc.body) <= MAX_SIGNAL_BYTES
        return
    assert delivery.signal.signal_id is not None


@FUZZ
@given(json_values)
def test_decode_envelope_of_any_json(envelope: Any) -> None:
    """A `signals.dispatch` task message is JSON anyone can write: any shape is refused cleanly."""
    with contextlib.suppress(InvalidSignal):
        decode_envelope(envelope)


def test_oversized_body_is_refused_and_cut() -> None:
    body = json.dumps(dict(VALID, metadata={"pad": "x" * (MAX_SIGNAL_BYTES + 10)})).encode()
    envelope = make_envelope(body, content_type="application/json", headers={})
    assert envelope["oversize"] == len(body)
    try:
        decode_envelope(envelope)
    except InvalidSignal as exc:
        assert "refused" in exc.reason and len(exc.body) == MAX_SIGNAL_BYTES
    else:
        raise AssertionError("an oversized signal was accepted")
