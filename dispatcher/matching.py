"""Which pipelines a signal wakes: an index, not a scan (pure: no I/O, no clock).

Every (scanned ticker, signal type or "any", bias or "any") a pipeline listens to is a bucket
key; each bucket holds its pipelines sorted by `min_confidence`. For one ticker of a signal, the
matches are the prefixes (bisect on the ticker's confidence) of at most four buckets:
(ticker, type, bias), (ticker, type, *), (ticker, *, bias), (ticker, *, *). Watchlist pipelines
live in the same kind of buckets keyed without the ticker and apply when the ticker is in the
watchlist, so editing the watchlist needs no rebuild. Cost per signal: O(tickers · log n +
matches), independent of how many pipelines exist.

A pipeline write changes one pipeline: `MatchIndex.patched` returns a new index with some
pipelines removed and some (re)added, touching only their buckets (O(their bucket entries)),
never the whole index. The new buckets sit in a small overlay over the shared base mapping, so
neither index is mutated and nothing of size n is copied; when the overlay grows past a
fraction of the base it is folded into a new base (one copy, amortized over many writes).

Semantics (the reference `matches_spec` below states them as plain code):
a pipeline matches when the signal's type is in its `signal_types` (or it has none) and some
ticker of the signal is scanned by it and passes its bias filter and `min_confidence` for that
ticker. A ticker with no bias entry has no bias and confidence 0. A mock signal
(`Signal.is_mock`) matches only pipelines whose scanner opts in (`Scanner.wants_mock`).

Mock signals live in buckets of their own: an opted-in pipeline is also indexed under the type
keys `mock:<type>` / `mock:*`, and a mock signal probes only those. So a mock signal costs
nothing for the pipelines that did not opt in (no scan, no filtering of their matches).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Collection, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from schemas.pipeline import Scanner
from schemas.signal import Signal, SignalType

ANY = None
#: The type key under which opted-in pipelines that take any type receive mock signals.
MOCK_ANY = "mock:*"

BucketKey = tuple[str | None, str | None, str | None]  # (ticker or None=watchlist, type, bias)


@dataclass(frozen=True)
class _Bucket:
    thresholds: tuple[float, ...]  # ascending min_confidence
    pipelines: tuple[Hashable, ...]

    def passing(self, confidence: float) -> tuple[Hashable, ...]:
        return self.pipelines[: bisect.bisect_right(self.thresholds, confidence)]

    def without(self, gone: Collection[Hashable]) -> _Bucket | None:
        """This bucket less the pipelines in `gone` (None when nothing is left)."""
        kept = [
            (t, p) for t, p in zip(self.thresholds, self.pipelines, strict=True) if p not in gone
        ]
        if not kept:
            return None
        return _Bucket(tuple(t for t, _ in kept), tuple(p for _, p in kept))

    def adding(self, entries: Iterable[tuple[float, Hashable]]) -> _Bucket:
        """This bucket with `entries` inserted, each after the equal thresholds already here
        (where a full build's stable sort would put a pipeline listed later)."""
        thresholds, pipelines = list(self.thresholds), list(self.pipelines)
        for threshold, pipeline_id in entries:
            at = bisect.bisect_right(thresholds, threshold)
            thresholds.insert(at, threshold)
            pipelines.insert(at, pipeline_id)
        return _Bucket(tuple(thresholds), tuple(pipelines))


_EMPTY = _Bucket((), ())
_MISSING = _Bucket((), ())  # "not in the overlay" (compared by identity)


def _mock_kind(kind: str | None) -> str:
    """The type key of a mock signal of type `kind` (ANY: the pipelines taking any type)."""
    return MOCK_ANY if kind is ANY else f"mock:{kind}"


def _type_keys(scanner: Scanner) -> list[str | None]:
    kinds: list[str | None] = [t.value for t in scanner.signal_types] or [ANY]
    keys = [kind for kind in kinds if kind != SignalType.MOCK.value]  # mock signals: below
    if scanner.wants_mock:
        keys.extend(_mock_kind(kind) for kind in kinds)
    return keys


def bucket_entries(
    pipeline_id: Hashable, scanner: Scanner
) -> Iterator[tuple[BucketKey, tuple[float, Hashable]]]:
    """Every (bucket key, entry) one pipeline puts in the index."""
    tickers: Iterable[str | None] = (None,) if scanner.watchlist else scanner.tickers
    types = _type_keys(scanner)
    biases: list[str | None] = [b.value for b in scanner.biases] or [ANY]
    entry = (scanner.min_confidence, pipeline_id)
    for ticker in tickers:
        for kind in types:
            for bias in biases:
                yield (ticker, kind, bias), entry


@dataclass(frozen=True)
class MatchIndex:
    """An immutable index of `signal` pipelines. Build with `MatchIndex.build`, change with
    `patched` (which returns a new index and leaves this one as it was)."""

    version: object
    size: int
    _buckets: Mapping[BucketKey, _Bucket] = field(repr=False)
    watchlist: frozenset[str] = frozenset()
    #: Buckets changed since `_buckets` was built (None: emptied); looked up first.
    _overlay: Mapping[BucketKey, _Bucket | None] = field(default_factory=dict, repr=False)

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
            for key, entry in bucket_entries(pipeline_id, scanner):
                staged[key].append(entry)
        buckets = {}
        for key, entries in staged.items():
            entries.sort(key=lambda item: item[0])
            buckets[key] = _Bucket(
                thresholds=tuple(e[0] for e in entries), pipelines=tuple(e[1] for e in entries)
            )
        return cls(version=version, size=size, _buckets=buckets, watchlist=frozenset(watchlist))

    def with_watchlist(self, watchlist: Iterable[str]) -> MatchIndex:
        return MatchIndex(
            self.version, self.size, self._buckets, frozenset(watchlist), self._overlay
        )

    def _bucket(self, key: BucketKey) -> _Bucket | None:
        found = self._overlay.get(key, _MISSING)
        return self._buckets.get(key) if found is _MISSING else found

    def patched(
        self,
        removed: Iterable[tuple[Hashable, Scanner]],
        added: Iterable[tuple[Hashable, Scanner]],
        *,
        version: object,
        fold_ratio: float = 0.0625,
        fold_min: int = 1024,
    ) -> MatchIndex:
        """A new index without the `removed` pipelines (each with the scanner it was indexed
        with) and with the `added` ones. To change a pipeline, remove its old scanner and add
        its new one; the result matches exactly what `build` over the new set would.

        Cost: the entries of the buckets these pipelines touch, plus a copy of the overlay;
        when the overlay outgrows `fold_ratio` of the base (and `fold_min` buckets), one copy
        of the whole mapping."""
        gone: dict[BucketKey, set[Hashable]] = defaultdict(set)
        size = self.size
        for pipeline_id, scanner in removed:
            size -= 1
            for key, _entry in bucket_entries(pipeline_id, scanner):
                gone[key].add(pipeline_id)
        new: dict[BucketKey, list[tuple[float, Hashable]]] = defaultdict(list)
        for pipeline_id, scanner in added:
            size += 1
            for key, entry in bucket_entries(pipeline_id, scanner):
                new[key].append(entry)
        overlay: dict[BucketKey, _Bucket | None] = dict(self._overlay)
        for key in gone.keys() | new.keys():
            bucket: _Bucket | None = self._bucket(key)
            if bucket is not None and key in gone:
                bucket = bucket.without(gone[key])
            if key in new:
                bucket = (bucket or _EMPTY).adding(new[key])
            overlay[key] = bucket
        base = self._buckets
        if len(overlay) > max(fold_min, fold_ratio * len(base)):
            merged = dict(base)
            for key, folded in overlay.items():
                if folded is None:
                    merged.pop(key, None)
                else:
                    merged[key] = folded
            base, overlay = merged, {}
        return MatchIndex(version, size, base, self.watchlist, overlay)

    def match(self, signal: Signal) -> list[Hashable]:
        """Ids of the pipelines `signal` wakes, each once, in a deterministic order."""
        buckets = self._buckets
        overlay = self._overlay
        kind = signal.signal_type.value
        kinds: tuple[str | None, ...] = (
            (_mock_kind(kind), MOCK_ANY) if signal.is_mock else (kind, ANY)
        )
        found: list[Hashable] = []
        for ticker in signal.tickers:
            entry = signal.bias.get(ticker)
            bias = entry.bias.value if entry is not None else None
            confidence = entry.confidence if entry is not None else 0.0
            scopes: tuple[str | None, ...] = (
                (ticker, None) if ticker in self.watchlist else (ticker,)
            )
            for scope in scopes:
                for key_kind in kinds:
                    for key_bias in (bias, ANY) if bias is not None else (ANY,):
                        key = (scope, key_kind, key_bias)
                        bucket = overlay.get(key, _MISSING) if overlay else _MISSING
                        if bucket is _MISSING:
                            bucket = buckets.get(key)
                        if bucket is not None:
                            found.extend(bucket.passing(confidence))
        if len(signal.tickers) == 1:
            return found  # one ticker: each pipeline sits in at most one probed bucket
        return list(dict.fromkeys(found))


def matches_spec(scanner: Scanner, signal: Signal, watchlist: Iterable[str] = ()) -> bool:
    """The matching rule for one pipeline, written plainly (reference for the index and tests)."""
    if signal.is_mock and not scanner.wants_mock:
        return False
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
