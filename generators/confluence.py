"""Confluence: signals that agree on one ticker within a window become one composite signal.

For each ticker, the constituents are recent signals naming it with a BULLISH or BEARISH bias
(confluence signals themselves, and mock ones unless `signal_types` lists them, never count).
Each constituent is taken in turn as an *anchor*: its group is every signal with the anchor's
bias on that ticker whose event time lies within `window_days` before the anchor's. One source
(a generator instance) counts once in a group: its most confident signal represents it. The
group is a confluence when it has at least `min_sources` sources and `min_types` distinct signal
types, and the anchor is its source's only signal in the group (a second article from the same
news generator strengthens nothing).

Once per (ticker, bias, window): event time is cut into fixed windows of `window_days`, aligned
to the Unix epoch (UTC). The first confluence anchored in a window *opens* its composite; its
`signal_id` derives from (source, ticker, bias, window start) and its `event_time` is the
opening anchor's. Later agreeing signals of that window join the same composite (same id): the
composite's members are every agreeing signal from `window_days` before the opening anchor to
the window's end, one per source. A check that finds a composite with more members than the
recorded one updates the stored row (`supersedes`: `signals.payload`) without publishing
it again, so pipelines run once per (ticker, bias, window), on the first
confluence. A confluence whose signals straddle a window boundary can open one composite on each
side. Opposite biases are separate composites.

Combined confidence = min(max_confidence, 1 - prod(1 - c_i)) over the representatives: the
chance that not all of them are wrong, treating them as independent. Opposing signals in the
window are listed in the metadata but do not change the number.

The windows are fixed and a group depends only on the `window_days` before its anchor, so a later
check (or a replay) finds the same composite with the same id. A check reports the composites
with a member within `lookback_days` before the tick.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from generators.base import BaseSignalGenerator, GeneratorConfig, Tick
from schemas.signal import Bias, Signal, SignalType

NEVER_COUNTED = (SignalType.CONFLUENCE,)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ConfluenceConfig(GeneratorConfig):
    """Settings of a confluence generator."""

    window_days: float = Field(default=3.0, gt=0, le=365, allow_inf_nan=False)
    #: Report groups whose newest member is at most this old at the check.
    lookback_days: float = Field(default=3.0, gt=0, le=365, allow_inf_nan=False)
    min_sources: int = Field(default=2, ge=2, le=50)
    min_types: int = Field(default=2, ge=1, le=50)
    #: Which signal types count; None means every type but confluence and mock.
    signal_types: tuple[SignalType, ...] | None = None
    max_confidence: float = Field(default=0.99, ge=0.0, le=1.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _coherent(self) -> ConfluenceConfig:
        if self.min_types > self.min_sources:
            raise ValueError(
                f"min_types ({self.min_types}) cannot exceed min_sources "
                f"({self.min_sources}): each type needs its own source"
            )
        if self.signal_types is not None and SignalType.CONFLUENCE in self.signal_types:
            raise ValueError("signal_types must not include confluence (it would feed itself)")
        return self

    def counts(self, signal_type: SignalType) -> bool:
        if signal_type in NEVER_COUNTED:
            return False
        if self.signal_types is None:
            return signal_type is not SignalType.MOCK
        return signal_type in self.signal_types


def combined_confidence(confidences: Sequence[float], cap: float = 1.0) -> float:
    """1 - prod(1 - c_i), capped."""
    miss = math.prod(1.0 - c for c in confidences)
    return min(cap, 1.0 - miss)


class ConfluenceGenerator(BaseSignalGenerator[ConfluenceConfig]):
    """Composite signal when different generators agree on a ticker within a window."""

    name: ClassVar[str] = "confluence"
    signal_type: ClassVar[SignalType] = SignalType.CONFLUENCE
    config_model: ClassVar[type[GeneratorConfig]] = ConfluenceConfig
    inputs: ClassVar[Literal["bars", "none", "news", "signals"]] = "signals"
    description: ClassVar[str] = "agreeing signals on one ticker within a window, combined"

    def history_days(self) -> float:
        """How far back (in days of event time) the loader must read signals: a reported
        window may start `window_days` before the lookback, and its opening group reaches
        `window_days` further back."""
        return 2 * self.config.window_days + self.config.lookback_days

    def window_start(self, moment: datetime) -> datetime:
        """The start of the fixed window (`window_days` wide, from the epoch) holding `moment`."""
        width = self.config.window_days * 86_400.0
        slot = math.floor((moment - _EPOCH).total_seconds() / width)
        return _EPOCH + timedelta(seconds=slot * width)

    def compute(self, data: Sequence[Signal], tick: Tick) -> list[Signal]:
        """The composite of each (ticker, bias, window) a confluence opened, with a member
        within `lookback_days` before the tick. Pure. Too few signals gives no composite and a
        logged reason."""
        config = self.config
        by_ticker: dict[str, list[tuple[Signal, Bias, float]]] = defaultdict(list)
        watched = set(self.tickers)
        for signal in data or ():
            if signal.source == self.source or not config.counts(signal.signal_type):
                continue
            if signal.event_time > tick.now:
                continue  # not yet visible at this check
            for ticker, view in signal.bias.items():
                if watched and ticker not in watched:
                    continue
                by_ticker[ticker].append((signal, view.bias, view.confidence))
        if sum(len(v) for v in by_ticker.values()) < config.min_sources:
            self.log_insufficient(
                logging.INFO,
                signals=sum(len(v) for v in by_ticker.values()),
                needed=config.min_sources,
                reason="too few signals to combine",
            )
            return []
        window = timedelta(days=config.window_days)
        earliest = tick.now - timedelta(days=config.lookback_days)
        out: list[Signal] = []
        for ticker in sorted(by_ticker):
            entries = sorted(
                by_ticker[ticker], key=lambda e: (e[0].event_time, str(e[0].signal_id))
            )
            openers: dict[tuple[Bias, datetime], int] = {}
            for index, (anchor, bias, _) in enumerate(entries):
                if bias is Bias.NEUTRAL:
                    continue
                key = (bias, self.window_start(anchor.event_time))
                if key in openers:
                    continue  # this window's composite is open: the anchor joins it
                start = anchor.event_time - window
                members = [
                    e for e in entries[: index + 1] if e[1] is bias and e[0].event_time >= start
                ]
                if sum(1 for e in members if e[0].source == anchor.source) > 1:
                    continue  # the anchor's source was already in the group
                if self._qualifies(members):
                    openers[key] = index
            for (bias, opened), index in sorted(openers.items(), key=lambda item: item[1]):
                anchor = entries[index][0]
                start, end = anchor.event_time - window, opened + window
                members = [e for e in entries if e[1] is bias and start <= e[0].event_time < end]
                if max(e[0].event_time for e in members) < earliest:
                    continue
                seen = [e for e in entries if start <= e[0].event_time < end]
                out.append(self._composite(ticker, bias, opened, anchor, members, seen, tick))
        return out

    def supersedes(self, stored: Signal, fresh: Signal) -> bool:
        """A later check's composite replaces the recorded one when it has more members (a
        source joined the window); never with fewer (a late or concurrent check)."""

        def members(signal: Signal) -> set[str]:
            return {
                str(c.get("signal_id"))
                for c in signal.metadata.get("constituents", ())
                if isinstance(c, dict)
            }

        return members(fresh) > members(stored)

    def _representatives(
        self, members: list[tuple[Signal, Bias, float]]
    ) -> list[tuple[Signal, Bias, float]]:
        best: dict[str, tuple[Signal, Bias, float]] = {}
        # Most confident first (ties: smallest id), so each source keeps its strongest signal.
        for entry in sorted(members, key=lambda e: (-e[2], str(e[0].signal_id))):
            best.setdefault(entry[0].source, entry)
        return sorted(best.values(), key=lambda e: str(e[0].signal_id))

    def _qualifies(self, members: list[tuple[Signal, Bias, float]]) -> bool:
        representatives = self._representatives(members)
        types = {e[0].signal_type for e in representatives}
        return len(representatives) >= self.config.min_sources and len(types) >= (
            self.config.min_types
        )

    def _composite(
        self,
        ticker: str,
        bias: Bias,
        opened: datetime,
        anchor: Signal,
        members: list[tuple[Signal, Bias, float]],
        seen: list[tuple[Signal, Bias, float]],
        tick: Tick,
    ) -> Signal:
        config = self.config
        representatives = self._representatives(members)
        confidence = round(
            combined_confidence([e[2] for e in representatives], config.max_confidence), 4
        )
        opposing = [str(e[0].signal_id) for e in seen if e[1] not in (bias, Bias.NEUTRAL)]
        described = ", ".join(
            f"{e[0].signal_type.value} ({e[0].source}, {e[2]:.2f})" for e in representatives
        )
        return self.ticker_signal(
            ticker,
            event_key=f"{bias.value}|window:{opened.isoformat()}",
            bias=bias,
            confidence=confidence,
            reasoning=f"{len(representatives)} {bias.value.lower()} signals on {ticker} "
            f"within {config.window_days:g} days: {described}"[:2000],
            metadata={
                "constituents": [
                    {
                        "signal_id": str(e[0].signal_id),
                        "signal_type": e[0].signal_type.value,
                        "source": e[0].source,
                        "confidence": e[2],
                        "event_time": e[0].event_time.isoformat(),
                    }
                    for e in representatives
                ],
                "opposing": opposing,
                "window_days": config.window_days,
                "window_start": opened.isoformat(),
                "window_end": (opened + timedelta(days=config.window_days)).isoformat(),
                "rule": "1 - prod(1 - confidence) over one signal per source",
            },
            timestamp=tick.now,
            event_time=anchor.event_time,
        )
