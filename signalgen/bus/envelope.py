"""The envelope: how a raw message from the `trading-signals` exchange travels to the
`signals.dispatch` task, encoded once here for the intake consumer (dispatcher/intake.py) and
for a dead letter sent again (signalgen/ops/dlq.py). Never deserializes the body: it travels as
UTF-8 text when it is JSON, as base64 otherwise; `dispatcher.intake.decode_envelope` decides."""

from __future__ import annotations

import base64
import math
from typing import Any

JSON_CONTENT_TYPES = frozenset({"application/json", "text/json"})
#: A signal is a few KiB; anything far larger on the intake is refused, and only this much of
#: it is passed on and kept in the dead letter (a stranger on the exchange cannot make the
#: dispatcher carry, decode and store megabytes).
MAX_SIGNAL_BYTES = 256 * 1024


def json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return repr(value)


def is_json(content_type: str | None) -> bool:
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
    if is_json(content_type) and oversize is None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    envelope: dict[str, Any] = {
        "content_type": content_type,
        "headers": json_safe(dict(headers or {})),
        "routing_key": routing_key,
    }
    if oversize is not None:
        envelope["oversize"] = oversize
    if text is not None:
        envelope.update(body=text, body_encoding="utf-8")
    else:
        envelope.update(body=base64.b64encode(raw).decode("ascii"), body_encoding="base64")
    return envelope
