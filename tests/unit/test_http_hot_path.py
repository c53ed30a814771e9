"""The signal list's hand-written JSON and the API key cache, without a server."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

from signalgen.interfaces.http.api import signal_fields, signal_page_json
from signalgen.interfaces.http.auth import Principal
from signalgen.interfaces.http.deps import KeyCache

MOMENT = datetime(2024, 5, 1, 12, 30, 1, 123456, tzinfo=UTC)
COLUMNS = (
    "signal_id",
    "signal_type",
    "source",
    "tickers",
    "created_at",
    "event_time",
    "payload",
    "published_at",
    "dispatch_status",
    "dispatched_at",
    "matched_count",
)


def row(**fields: object) -> tuple[object, ...]:
    values = {
        "signal_id": uuid.uuid4(),
        "signal_type": "news",
        "source": "s",
        "tickers": ["AAPL"],
        "created_at": MOMENT,
        "event_time": MOMENT,
        "payload": '{"k": [1, 2.5, "\\u00e9"]}',
        "published_at": MOMENT,
        "dispatch_status": "dispatched",
        "dispatched_at": MOMENT,
        "matched_count": 3,
        **fields,
    }
    return tuple(values[name] for name in COLUMNS)


def expected(rows: list[tuple[object, ...]], cursor: str | None) -> dict[str, object]:
    items = []
    for values in rows:
        named = SimpleNamespace(**dict(zip(COLUMNS, values, strict=True)))
        fields = {
            key: value.astimezone(UTC).isoformat().replace("+00:00", "Z")
            if isinstance(value, datetime)
            else str(value)
            if isinstance(value, uuid.UUID)
            else value
            for key, value in signal_fields(named).items()
        }
        items.append(fields)
    return {"items": items, "next_cursor": cursor}


def test_signal_page_json_equals_the_generic_encoding() -> None:
    paris = timezone(timedelta(hours=2))
    rows = [
        row(),
        row(published_at=None, dispatch_status=None, dispatched_at=None, matched_count=None),
        row(source='é"\\\n\u2028x', tickers=["B.C", "D-E"], signal_type="mock"),
        # aware but not UTC (a driver in another session time zone): written as UTC
        row(created_at=MOMENT.astimezone(paris), event_time=MOMENT.replace(microsecond=0)),
        row(tickers=[], matched_count=0),
    ]
    for cursor in (None, 'abc"d'):
        body = signal_page_json(rows, cursor)
        assert json.loads(body) == expected(rows, cursor)
        assert body.decode("ascii")  # ASCII-only, like json.dumps
    assert json.loads(signal_page_json([], None)) == {"items": [], "next_cursor": None}
    assert json.loads(signal_page_json(rows[3:4], None))["items"][0]["created_at"] == (
        "2024-05-01T12:30:01.123456Z"
    )


def test_key_cache_keeps_principals_for_its_ttl_only() -> None:
    principal = Principal(user="alice", is_admin=False, key_id=uuid.uuid4())
    now = [100.0]
    cache = KeyCache(0.05, clock=lambda: now[0])
    assert cache.get("d") is None
    cache.put("d", principal)
    now[0] = 100.0 + 0.049
    assert cache.get("d") == principal
    now[0] = 100.0 + 0.05  # the TTL is up
    assert cache.get("d") is None
    disabled = KeyCache(0)
    disabled.put("d", principal)
    assert disabled.get("d") is None
