"""Which pipelines a signal wakes: an index, not a scan (pure: no I/O, no clock).

Every (scanned ticker, signal type or "any", bias or "any") a pipeline listens to is a bucket
key; each bucket holds its pipelines sorted by `min_confidence`. For one ticker of a signal, the
matches are the prefixes (bisect on the ticker's confidence) of at most four buckets:
(ticker, type, bias), (ticker, type, *), (ticker, *, bias), (ticker, *, *). Watchlist pipelines
live in the same kind of buckets keyed without the ticker and apply when the ticker is in the
watchlist, so editing the watchlist needs no rebuild. Cost per signal: O(tickers · log n +
matches), independent of how many pipelines exist.

Semantics (the reference `matches_spec` below states them as plain code):
a pipeline matches when the signal's type is in its `signal_types` (or it has none) and some
ticker of the signal is scanned by it and passes its bias filter and `min_confidence` for that
ticker. A ticker with no bias entry has no bias and confidence 0.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field

from schemas.pipeline import Scanner
from schemas.signal import Signal

ANY = None

BucketKey = tuple[str | None, str | None, str | None]  # (ticker or None=watchlist, type, bias)


@dataclass(frozen=True)
class _Bucket:
    thresholds: tuple[float, ...]  # ascending min_confidence
    pipelines: tuple[Hashable, ...]

    def passing(self, confidence: float) -> tuple[Hashable, ...]:
        return self.pipelines[: bisect.bisect_right(self.thresholds, confidence)]


@dataclass(frozen=True)
class MatchIndex:
    """An immutable index of `signal` pipelines. Build with `MatchIndex.build`."""

    version: object
    size: int
    _buckets: Mapping[BucketKey, _Bucket] = field(repr=False)
    watchlist: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        scanners: Iterable[tuple[Hashable, Scanner]],
        *,
        watchlist: Iterable[str] = (),
        version: object = 0,
    ) -> MatchIndex:
        """Index `(pipeline_id, scanner)` pairs (enabled signal pipelines only)."""
        staged: dict[BucketKey, list[tuple[float, Hashable]]] = defaultdict(list)
        size = 0
        for pipeline_id, scanner in scanners:
            size += 1
            tickers: Iterable[str | None] = (None,) if scanner.watchlist else scanner.tickers
            types: list[str | None] = [t.value for t in scanner.signal_types] or [ANY]
            biases: list[str | None] = [b.value for b in scanner.biases] or [ANY]
            entry = (scanner.min_confidence, pipeline_id)
            for ticker in tickers:
                for kind in types:
                    for bias in biases:
                        staged[(ticker, kind, bias)].append(entry)
        buckets = {}
        for key, entries in staged.items():
            entries.sort(key=lambda item: item[0])
            buckets[key] = _Bucket(
                thresholds=tuple(e[0] for e in entries), pipelines=tuple(e[1] for e in entries)
            )
        return cls(version=version, size=size, _buckets=buckets, watchlist=frozenset(watchlist))

    def with_watchlist(self, watchlist: Iterable[str]) -> MatchIndex:
        return MatchIndex(self.version, self.size, self._buckets, frozenset(watchlist))

    def match(self, signal: Signal) -> list[Hashable]:
        """Ids of the pipelines `signal` wakes, each once, in a deterministic order."""
        buckets = self._buckets
        kind = signal.signal_type.value
        found: list[Hashable] = []
        for ticker in signal.tickers:
            entry = signal.bias.get(ticker)
            bias = entry.bias.value if entry is not None else None
            confidence = entry.confidence if entry is not None else 0.0
            scopes: tuple[str | None, ...] = (
                (ticker, None) if ticker in self.watchlist else (ticker,)
            )
            for scope in scopes:
                for key_kind in (kind, ANY):
                    for key_bias in (bias, ANY) if bias is not None else (ANY,):
                        bucket = buckets.get((scope, key_kind, key_bias))
                        if bucket is not None:
                            found.extend(bucket.passing(confidence))
        if len(signal.tickers) == 1:
            return found  # one ticker: each pipeline sits in at most one probed bucket
        return list(dict.fromkeys(found))


def matches_spec(scanner: Scanner, signal: Signal, watchlist: Iterable[str] = ()) -> bool:
    """The matching rule for one pipeline, written plainly (reference for the index and tests)."""
    if scanner.signal_types and signal.signal_type not in scanner.signal_types:
        return False
    scanned = set(watchlist) if scanner.watchlist else set(scanner.tickers)
    for ticker in signal.tickers:
        if ticker not in scanned:
            continue
        entry = signal.bias.get(ticker)
        if scanner.biases and (entry is None or entry.bias not in scanner.biases):
            continue
        confidence = entry.confidence if entry is not None else 0.0
        if confidence >= scanner.min_confidence:
            return True
    return False
