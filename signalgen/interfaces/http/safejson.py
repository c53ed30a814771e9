"""Error bodies that always encode: what a client sent, echoed back, made JSON-safe. Pure.

A 422 echoes the offending input. Starlette writes JSON as strict UTF-8 without NaN, so an
input holding a lone surrogate (`"\\ud800"` in the request JSON) or `NaN`/`Infinity` (which
Python's JSON reader accepts) would turn the 422 into a 500. `json_safe` escapes surrogates
(`\\ud800` as the six characters), writes non-finite numbers as text (`"nan"`), turns any
other object into its `str`, and cuts nesting deeper than `MAX_DEPTH` (a body nested a
thousand deep must not recurse a thousand deep here).
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 16
TOO_DEEP = "...(nested too deep)"
MAX_INT_BITS = 1024


def safe_text(value: str) -> str:
    """`value`, with lone surrogates written as `\\udXXX` so it encodes as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def json_safe(value: Any, depth: int = 0) -> Any:
    """`value` as plain JSON data that `json.dumps(allow_nan=False)` encodes as UTF-8."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # past 4300 digits Python refuses to write an int as text
        return value if value.bit_length() <= MAX_INT_BITS else "(integer too large)"
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth >= MAX_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {safe_text(str(key)): json_safe(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item, depth + 1) for item in value]
    if isinstance(value, bytes):
        return safe_text(value.decode("utf-8", "replace"))
    return safe_text(str(value))
