"""The message headers of the `trading-signals` exchange, defined once for publisher and
dispatcher. A header is what its publisher claims; the dispatcher decides what to believe
(dispatcher/intake.py)."""

from __future__ import annotations

#: The publication time, epoch seconds (float), set by our publisher; the start of an
#: execution's latency when it falls inside the signal's own time window.
PUBLISHED_AT_HEADER = "x-published-at"
