"""From a raw message on `signals.dispatch` to a validated Signal, or a reason to dead-letter.

The intake consumer never decodes a body (so a pickle is never unpickled): it wraps the raw
bytes in an *envelope*, a small JSON-safe dict, the one argument of a `signals.dispatch` task.
The body travels as UTF-8 text when it is JSON, as base64 otherwise. `decode_envelope` then
accepts only JSON content and a valid Signal; anything else raises `InvalidSignal`, carrying
what the dead-letter row needs.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from schemas.signal import Signal

PUBLISHED_AT_HEADER = "x-published-at"
GENERATION_HEADER = "x-generation"
JSON_CONTENT_TYPES = frozenset({"application/json", "text/json"})
#: A signal is a few KiB; anything far larger on the intake is refused, and only this much of
#: it is passed on and kept in the dead letter (a stranger on the exchange cannot make the
#: dispatcher carry, decode and store megabytes).
MAX_SIGNAL_BYTES = 256 * 1024


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
    signal: Signal
    payload: str
    published_at: datetime | None
    generation: int


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return repr(value)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # plain publishers may omit it; the body is validated as JSON anyway
    return content_type.split(";")[0].strip().lower() in JSON_CONTENT_TYPES


def make_envelope(
    body: bytes | str,
    *,
    content_type: str | None,
    headers: dict[str, Any] | None,
    routing_key: str | None = None,
) -> dict[str, Any]:
    """Wrap a raw message for the `signals.dispatch` task. Never deserializes the body.

    A body over `MAX_SIGNAL_BYTES` is cut to that size and marked `oversize` (its real size):
    `decode_envelope` then refuses it."""
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    oversize = len(raw) if len(raw) > MAX_SIGNAL_BYTES else None
    if oversize is not None:
        raw = raw[:MAX_SIGNAL_BYTES]
    text: str | None = None
    if _is_json(content_type) and oversize is None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    envelope: dict[str, Any] = {
        "content_type": content_type,
        "headers": _json_safe(dict(headers or {})),
        "routing_key": routing_key,
    }
    if oversize is not None:
        envelope["oversize"] = oversize
    if text is not None:
        envelope.update(body=text, body_encoding="utf-8")
    else:
        envelope.update(body=base64.b64encode(raw).decode("ascii"), body_encoding="base64")
    return envelope


def envelope_for_payload(
    payload: str, *, published_at: float | None = None, generation: int = 0
) -> dict[str, Any]:
    """An envelope for a signal JSON already in hand (replay, tests, benchmarks)."""
    headers: dict[str, Any] = {GENERATION_HEADER: generation}
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


def published_at_of(headers: dict[str, Any]) -> datetime | None:
    value = headers.get(PUBLISHED_AT_HEADER)
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def decode_envelope(envelope: Any) -> Delivery:
    """The Signal inside an envelope, or InvalidSignal with the reason."""
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
    try:
        generation = max(0, int(headers.get(GENERATION_HEADER, 0)))
    except (TypeError, ValueError):
        generation = 0
    return Delivery(signal, payload, published_at_of(headers), generation)
