"""Envelopes: raw bytes in, a Signal or a dead-letter reason out; nothing ever unpickled.
Headers are claims: no generation from the bus, `x-published-at` only inside the signal's
window, and a republished signal runs nothing again (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import json
import pickle
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from dispatcher import intake, service
from dispatcher.intake import InvalidSignal, decode_envelope, make_envelope, published_at_of
from dispatcher.matching import MatchIndex
from signalgen.storage import Database
from signalgen.storage.models import Execution, SignalRecord

SIGNAL = {
    "signal_id": str(uuid.uuid4()),
    "signal_type": "golden_cross",
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
        headers={"x-published-at": 1735776000.5},
    )
    json.dumps(envelope)  # JSON-safe: it is a Celery task argument
    delivery = decode_envelope(envelope, now=datetime(2025, 1, 2, 0, 1, tzinfo=UTC))
    assert str(delivery.signal.signal_id) == SIGNAL["signal_id"]
    assert delivery.published_at == datetime.fromtimestamp(1735776000.5, UTC)
    assert delivery.ignored == ()


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
    assert delivery.published_at is None
    assert [note.split(":")[0] for note in delivery.ignored] == ["x-generation", "x-published-at"]


# -- headers are claims: x-published-at clamped to the signal's window, no generation ----------

SIGNAL_TIME = datetime(2025, 1, 2, tzinfo=UTC)  # SIGNAL's own timestamp
NOW = SIGNAL_TIME + timedelta(minutes=1)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1,2,3", "not a number"),
        (-1, "before the signal"),
        (-1.0e9, "before the signal"),
        (1.0, "before the signal"),
        (0, "before the signal"),
        (1e308, "in the future"),
        (10**400, "not a number"),
        (-(10**400), "not a number"),
        (10**30, "in the future"),
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        (float("-inf"), "not a finite number"),
        ("inf", "not a finite number"),
        ("-Infinity", "not a finite number"),
        ("nan", "not a finite number"),
        ("1e999", "not a finite number"),
        ("9" * 400, "text too long"),
        ("", "not a number"),
        ("soon", "not a number"),
        ([SIGNAL_TIME.timestamp()], "not a number (list)"),
        ({"t": SIGNAL_TIME.timestamp()}, "not a number (dict)"),
        (str(SIGNAL_TIME.timestamp()).encode(), "not a number (bytes)"),
        (True, "not a number (bool)"),
        ((NOW + timedelta(seconds=6)).timestamp(), "in the future"),
        ((NOW + timedelta(days=365)).timestamp(), "in the future"),
        ((SIGNAL_TIME - timedelta(seconds=6)).timestamp(), "before the signal"),
    ],
)
def test_unbelievable_published_at_is_ignored_with_the_reason(value: Any, reason: str) -> None:
    published, note = published_at_of(value, signal_time=SIGNAL_TIME, now=NOW)
    assert published is None
    assert note is not None and reason in note


@pytest.mark.parametrize(
    "value",
    [
        SIGNAL_TIME.timestamp(),
        int(SIGNAL_TIME.timestamp()),
        (SIGNAL_TIME - timedelta(seconds=4)).timestamp(),  # publisher's clock a little behind
        (NOW + timedelta(seconds=4)).timestamp(),  # or a little ahead
        NOW.timestamp(),
        str(SIGNAL_TIME.timestamp() + 30),
    ],
)
def test_a_published_at_inside_the_window_is_believed(value: Any) -> None:
    published, note = published_at_of(value, signal_time=SIGNAL_TIME, now=NOW)
    assert note is None
    assert published == datetime.fromtimestamp(float(value), UTC)


def test_an_absent_published_at_is_not_reported() -> None:
    assert published_at_of(None, signal_time=SIGNAL_TIME, now=NOW) == (None, None)


HOSTILE_CLAIMS: list[dict[str, Any]] = [
    {"x-generation": "1,2,3"},
    {"x-generation": 5},
    {"x-generation": -1},
    {"x-generation": 10**400},
    {"x-generation": float("nan")},
    {"x-generation": [1, 2, 3]},
    {"x-generation": {"g": 1}},
    {"x-generation": b"7"},
    {"X-Generation": 2},
    {"x-replay-id": str(uuid.uuid4())},
    {"x-replay-id": "not-a-uuid", "x-replay": True},
]


@pytest.mark.parametrize("headers", HOSTILE_CLAIMS)
def test_no_header_makes_a_generation(headers: dict[str, Any]) -> None:
    envelope = make_envelope(
        json.dumps(SIGNAL), content_type="application/json", headers=dict(headers)
    )
    json.dumps(envelope)
    delivery = decode_envelope(envelope, now=NOW)
    assert not hasattr(delivery, "generation")  # the bus has no say in it
    assert sorted(note.split(":")[0] for note in delivery.ignored) == sorted(headers)


@pytest.mark.parametrize("value", [1.0, 1e308, float("nan"), "inf", 10**400, [1], b"1"])
def test_hostile_published_at_through_the_envelope(value: Any) -> None:
    """make_envelope turns the header JSON-safe (NaN to text, bytes to text): still refused."""
    envelope = make_envelope(
        json.dumps(SIGNAL), content_type=None, headers={"x-published-at": value}
    )
    json.dumps(envelope)
    delivery = decode_envelope(envelope, now=NOW)
    assert delivery.published_at is None
    assert [n.split(":")[0] for n in delivery.ignored] == ["x-published-at"]


def test_the_publisher_and_the_intake_share_one_header_name() -> None:
    from signalgen.bus import PUBLISHED_AT_HEADER as exported
    from signalgen.bus.headers import PUBLISHED_AT_HEADER as defined
    from signalgen.bus.publisher import PUBLISHED_AT_HEADER as published

    assert intake.PUBLISHED_AT_HEADER is defined is exported is published


# -- dispatch: a republished signal runs nothing twice, whatever its headers --------------------


def _pipelines(db: Database, count: int) -> MatchIndex:
    from dispatcher.store import load_signal_scanners
    from tests.support.ops import add_pipeline

    for _ in range(count):
        add_pipeline(db, tickers=("AAPL",))
    return MatchIndex.build(load_signal_scanners(db))


def _executions(db: Database) -> list[tuple[int, str]]:
    with db.session() as session:
        rows = session.execute(
            select(Execution.generation, Execution.idempotency_key).order_by(Execution.id)
        ).all()
    return [(row.generation, row.idempotency_key) for row in rows]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_republish_with_forged_headers_claims_nothing(
    backend: str, request: pytest.FixtureRequest
) -> None:
    db: Database = request.getfixturevalue("sqlite_db" if backend == "sqlite" else "pg_db")
    index = _pipelines(db, 3)
    payload = json.dumps(dict(SIGNAL, signal_id=str(uuid.uuid4())))
    sent: list[tuple[int, float | None]] = []
    clock = lambda: NOW  # noqa: E731
    first = service.dispatch(
        make_envelope(
            payload,
            content_type="application/json",
            headers={"x-published-at": SIGNAL_TIME.timestamp() + 10},
        ),
        db=db,
        index=index,
        enqueue=sent.extend,
        now=clock,
    )
    assert first.claimed == 3
    assert {published for _, published in sent} == {SIGNAL_TIME.timestamp() + 10}
    before = _executions(db)
    for headers in [*HOSTILE_CLAIMS, {"x-generation": 1, "x-published-at": 1.0}]:
        again = service.dispatch(
            make_envelope(payload, content_type="application/json", headers=headers),
            db=db,
            index=index,
            enqueue=sent.extend,
            now=clock,
        )
        assert (again.claimed, again.reenqueued) == (0, 0)
    assert _executions(db) == before and len(sent) == 3
    assert {generation for generation, _ in before} == {0}


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_forged_published_at_never_reaches_latency(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """A first sight with `x-published-at: 1.0`: recorded as published now, latency unknown;
    a later delivery (a crashed dispatch's leftovers) starts latency at the recorded time."""
    db: Database = request.getfixturevalue("sqlite_db" if backend == "sqlite" else "pg_db")
    index = _pipelines(db, 2)
    signal_id = uuid.uuid4()
    payload = json.dumps(dict(SIGNAL, signal_id=str(signal_id)))
    forged = make_envelope(payload, content_type=None, headers={"x-published-at": 1.0})

    def broker_down(_: Any) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        service.dispatch(forged, db=db, index=index, enqueue=broker_down, now=lambda: NOW)
    with db.session() as session:
        recorded = session.get(SignalRecord, signal_id)
        assert recorded is not None and recorded.published_at == NOW
    sent: list[tuple[int, float | None]] = []
    later = NOW + timedelta(seconds=3)
    result = service.dispatch(forged, db=db, index=index, enqueue=sent.extend, now=lambda: later)
    assert result.reenqueued == 2
    assert {published for _, published in sent} == {NOW.timestamp()}
    (execution_id, published) = sent[0]
    service.execute(execution_id, published, db=db, lease=timedelta(seconds=30), now=lambda: later)
    with db.session() as session:
        row = session.get(Execution, execution_id)
        assert row is not None and row.latency_seconds == 3.0
