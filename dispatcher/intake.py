"""From a raw message on `signals.dispatch` to a validated Signal, or a reason to dead-letter.

The intake consumer never decodes a body (so a pickle is never unpickled): it wraps the raw
bytes in an *envelope*, a small JSON-safe dict, the one argument of a `signals.dispatch` task.
The body travels as UTF-8 text when it is JSON, as base64 otherwise. `decode_envelope` then
accepts only JSON content and a valid Signal; anything else raises `InvalidSignal`, carrying
what the dead-letter row needs.

Headers are claims made by whoever published, not facts: the exchange is open to any
subscriber, and so to any publisher, in any language. So:

- a message from the bus is always generation 0. A higher generation exists only as the claims a
  forced replay writes itself (dispatcher/replay.py, recorded in the `replays` table); a header
  (`x-generation`, `x-replay-id`, ...) cannot ask for one, and a republished signal finds its
  generation-0 claims taken and runs nothing. Such headers are reported in `Delivery.ignored`;
- `x-published-at` is believed only inside the signal's own window: not before its `timestamp`
  and not after now, give or take `CLOCK_SKEW`. Otherwise it is ignored, so a forged
  `x-published-at: 1.0` cannot put 1.8e9 s into the latency of an execution.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from schemas.signal import Signal
from signalgen.bus.envelope import JSON_CONTENT_TYPES as JSON_CONTENT_TYPES
from signalgen.bus.envelope import MAX_SIGNAL_BYTES as MAX_SIGNAL_BYTES
from signalgen.bus.envelope import is_json as _is_json
from signalgen.bus.envelope import make_envelope as make_envelope
from signalgen.bus.headers import PUBLISHED_AT_HEADER as PUBLISHED_AT_HEADER

#: Headers that once asked for a replay generation, or look like they do: never obeyed, reported.
CLAIM_HEADERS = frozenset({"x-generation", "x-replay", "x-replay-id", "x-replay-generation"})
#: Clock difference between a publisher and this dispatcher that `x-published-at` may show.
CLOCK_SKEW = timedelta(seconds=5)


class InvalidSignal(ValueError):
    """A message that is not a valid signal. Dead-lettered with `reason`, never retried."""

    def __init__(
        self, reason: str, body: bytes, content_type: str | None, headers: dict[str, Any]
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.body = body
        self.content_type = content_type
        self.headers = headers


@dataclass(frozen=True)
class Delivery:
    """A valid signal from the bus. Its generation is always 0 (see the module doc)."""

    signal: Signal
    payload: str
    #: The publisher's `x-published-at`, when present and inside the signal's window.
    published_at: datetime | None
    #: Headers not believed, each with the reason ("x-generation: never taken from a header").
    ignored: tuple[str, ...] = ()


def envelope_for_payload(payload: str, *, published_at: float | None = None) -> dict[str, Any]:
    """An envelope for a signal JSON already in hand (repair sweep, tests, benchmarks)."""
    headers: dict[str, Any] = {}
    if published_at is not None:
        headers[PUBLISHED_AT_HEADER] = published_at
    return make_envelope(payload, content_type="application/json", headers=headers)


def envelope_body(envelope: dict[str, Any]) -> bytes:
    body = envelope.get("body", "")
    if envelope.get("body_encoding") == "base64":
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return str(body).encode("utf-8", "replace")
    return str(body).encode("utf-8", "replace")


#: Longest text an `x-published-at` string may have (a float's repr is at most 24 characters).
_MAX_NUMBER_TEXT = 40


def published_at_of(
    value: Any, *, signal_time: datetime, now: datetime, skew: timedelta = CLOCK_SKEW
) -> tuple[datetime | None, str | None]:
    """The publication time an `x-published-at` header claims, if believable: a finite number
    of epoch seconds (or its decimal text) not before `signal_time - skew` (a signal is not
    published before it is made) and not after `now + skew`. Returns (time, None), or (None,
    why it was ignored); an absent header is (None, None)."""
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None, f"not a number ({type(value).__name__})"
    if isinstance(value, str) and len(value) > _MAX_NUMBER_TEXT:
        return None, "not a number (text too long)"
    try:
        seconds = float(value)
    except (ValueError, OverflowError):
        return None, "not a number"
    if not math.isfinite(seconds):
        return None, "not a finite number"
    earliest = (signal_time - skew).timestamp()
    latest = (now + skew).timestamp()
    if seconds < earliest:
        return None, "before the signal's own timestamp"
    if seconds > latest:
        return None, "in the future"
    return datetime.fromtimestamp(seconds, UTC), None


def _ignored_headers(headers: dict[str, Any], published_note: str | None) -> tuple[str, ...]:
    ignored = [
        f"{name}: replay generations are never taken from a header"
        for name in sorted(headers)
        if isinstance(name, str) and name.lower() in CLAIM_HEADERS
    ]
    if published_note is not None:
        ignored.append(f"{PUBLISHED_AT_HEADER}: {published_note}")
    return tuple(ignored)


def decode_envelope(envelope: Any, *, now: datetime | None = None) -> Delivery:
    """The Signal inside an envelope, or InvalidSignal with the reason. `now` (default: the
    clock) bounds the `x-published-at` a publisher may claim."""
    if not isinstance(envelope, dict):
        raise InvalidSignal(
            f"envelope is {type(envelope).__name__}, not an object",
            repr(envelope).encode("utf-8"),
            None,
            {},
        )
    raw_headers = envelope.get("headers")
    headers: dict[str, Any] = raw_headers if isinstance(raw_headers, dict) else {}
    content_type = envelope.get("content_type")
    body = envelope_body(envelope)
    if envelope.get("oversize") is not None or len(body) > MAX_SIGNAL_BYTES:
        size = envelope.get("oversize") or len(body)
        raise InvalidSignal(
            f"signal of {size} bytes refused: the limit is {MAX_SIGNAL_BYTES}",
            body[:MAX_SIGNAL_BYTES],
            content_type,
            headers,
        )
    if not _is_json(content_type):
        raise InvalidSignal(
            f"content type {content_type!r} refused: signals are JSON", body, content_type, headers
        )
    if envelope.get("body_encoding") != "utf-8":
        raise InvalidSignal("body is not UTF-8 text", body, content_type, headers)
    payload = body.decode("utf-8")
    try:
        signal = Signal.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "signal"
        reason = f"invalid signal: {where}: {first['msg']}"
        if exc.error_count() > 1:
            reason += f" (and {exc.error_count() - 1} more)"
        raise InvalidSignal(reason, body, content_type, headers) from None
    published_at, note = published_at_of(
        headers.get(PUBLISHED_AT_HEADER),
        signal_time=signal.timestamp,
        now=now if now is not None else datetime.now(UTC),
    )
    return Delivery(signal, payload, published_at, _ignored_headers(headers, note))
