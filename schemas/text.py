"""Text that can be stored and sent: no lone UTF-16 surrogates. Pure.

JSON may spell a lone surrogate (`"\\ud800"`), and Python's JSON reader turns it into a `str`
that cannot be encoded as UTF-8: PostgreSQL, the bus and every JSON writer would fail on it
later, far from the request. Bodies are checked on the way in instead, naming where it is.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def surrogate_path(value: Any, path: str = "") -> str | None:
    """Where in `value` (nested dicts and lists of any depth) a string or a key holds a lone
    surrogate, as `a.b[2]`; None when nowhere. Iterative: any nesting depth is safe."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if has_surrogate(item):
                return where or "value"
        elif isinstance(item, dict):
            for key, inner in item.items():
                name = key if isinstance(key, str) else str(key)
                if has_surrogate(name):
                    return f"{where}.<key>" if where else "<key>"
                stack.append((inner, f"{where}.{name}" if where else name))
        elif isinstance(item, list | tuple):
            stack.extend((inner, f"{where}[{index}]") for index, inner in enumerate(item))
    return None


def refuse_surrogates(value: Any) -> Any:
    """A `mode="before"` validator: `value` unchanged, or ValueError naming the spot."""
    where = surrogate_path(value)
    if where is not None:
        spot = "" if where == "value" else f" at {where}"
        raise ValueError(f"text holds a lone UTF-16 surrogate{spot}: send valid Unicode")
    return value
