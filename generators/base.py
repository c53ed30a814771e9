"""What a generator is: a small class with a pure `compute`, its config, and what data it needs.

A generator never reads the clock, the network or a database. The framework hands it a `Tick`
(when and which scheduled check this is) and its inputs (`Bars` for price generators), and it
returns Signals. The same code runs live, in backtests and in tests.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from schemas.signal import Bias, Signal, SignalBias, SignalType, Ticker, stable_signal_id
from signalgen.logs import log_event

# numpy is imported where it computes: the delivery workers that load this registry never do.
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]


class GeneratorConfig(BaseModel):
    """Base of every generator's settings: frozen, unknown keys refused, tickers validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Symbols to watch; None means the watchlist (config/watchlist.json).
    tickers: tuple[Ticker, ...] | None = Field(default=None, min_length=1)


ConfigT = TypeVar("ConfigT", bound=GeneratorConfig)


@dataclass(frozen=True)
class Tick:
    """One scheduled check: `now` is when it runs; `key` names its schedule slot.

    Two beats firing the same slot, or a retry of it, carry the same `key`, so anything derived
    from it (a mock signal's id) is the same too.
    """

    now: datetime
    key: str

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("Tick.now must be timezone-aware UTC")

    @classmethod
    def for_slot(cls, now: datetime, interval_seconds: float) -> Tick:
        """The tick of the `interval_seconds`-long slot (aligned to the epoch) holding `now`."""
        slot = int(now.timestamp() // interval_seconds)
        return cls(now=now.astimezone(UTC), key=f"{int(interval_seconds)}s:{slot}")


@dataclass(frozen=True)
class Bars:
    """Daily bars of several tickers on one shared date axis.

    Price arrays are float64 shaped (n_tickers, n_bars); NaN where a ticker has no bar that day.
    Dates ascend. This is the frame a price generator computes on, vectorised across tickers.
    """

    tickers: tuple[str, ...]
    dates: npt.NDArray[np.datetime64]
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        import numpy as np

        shape = (len(self.tickers), len(self.dates))
        for name in ("open", "high", "low", "close", "volume"):
            array = getattr(self, name)
            if array.shape != shape:
                raise ValueError(f"Bars.{name} has shape {array.shape}, expected {shape}")
        if len(self.dates) > 1 and not bool(np.all(self.dates[1:] > self.dates[:-1])):
            raise ValueError("Bars.dates must be strictly ascending")
        self._index.update({ticker: i for i, ticker in enumerate(self.tickers)})

    @property
    def n_bars(self) -> int:
        return len(self.dates)

    def row(self, ticker: str) -> int:
        return self._index[ticker]

    def day(self, position: int) -> date:
        return self.dates[position].astype("datetime64[D]").astype(date)  # type: ignore[no-any-return]

    def head(self, n: int) -> Bars:
        """The first `n` bars: what a live check on day n would have seen."""
        return Bars(
            tickers=self.tickers,
            dates=self.dates[:n],
            open=self.open[:, :n],
            high=self.high[:, :n],
            low=self.low[:, :n],
            close=self.close[:, :n],
            volume=self.volume[:, :n],
        )

    def tail(self, n: int) -> Bars:
        """The last `n` bars (all of them when fewer)."""
        start = max(0, self.n_bars - n)
        return Bars(
            tickers=self.tickers,
            dates=self.dates[start:],
            open=self.open[:, start:],
            high=self.high[:, start:],
            low=self.low[:, start:],
            close=self.close[:, start:],
            volume=self.volume[:, start:],
        )

    @classmethod
    def empty(cls, tickers: tuple[str, ...] = ()) -> Bars:
        import numpy as np

        nothing = np.empty((len(tickers), 0))
        return cls(
            tickers,
            np.array([], dtype="datetime64[D]"),
            nothing,
            nothing.copy(),
            nothing.copy(),
            nothing.copy(),
            nothing.copy(),
        )

    @classmethod
    def from_long(cls, rows: Any, tickers: tuple[str, ...] | None = None) -> Bars:
        """Build from a long frame: columns ticker, date, open, high, low, close, volume."""
        import numpy as np
        import pandas as pd

        frame = pd.DataFrame(rows)
        if tickers is None:
            tickers = tuple(sorted(frame["ticker"].unique())) if len(frame) else ()
        if frame.empty:
            return cls.empty(tickers)
        frame = frame.assign(date=pd.to_datetime(frame["date"]).dt.normalize())
        dates = np.sort(frame["date"].unique()).astype("datetime64[D]")
        arrays = {}
        for column in ("open", "high", "low", "close", "volume"):
            wide = frame.pivot_table(index="ticker", columns="date", values=column, aggfunc="last")
            wide = wide.reindex(index=list(tickers), columns=pd.DatetimeIndex(dates))
            arrays[column] = wide.to_numpy(dtype=np.float64, na_value=np.nan)
        return cls(
            tickers=tickers,
            dates=dates,
            open=arrays["open"],
            high=arrays["high"],
            low=arrays["low"],
            close=arrays["close"],
            volume=arrays["volume"],
        )


class BaseSignalGenerator(ABC, Generic[ConfigT]):
    """A signal generator. Subclasses set `name`, `signal_type`, `config_model` and `compute`.

    `inputs` says what the framework must load before calling `compute`:
    "bars" (daily `Bars` of its tickers, `lookback()` of them), "none", "news" or "signals".
    """

    name: ClassVar[str]
    signal_type: ClassVar[SignalType]
    config_model: ClassVar[type[GeneratorConfig]]
    inputs: ClassVar[Literal["bars", "none", "news", "signals"]] = "bars"
    description: ClassVar[str] = ""

    def __init__(self, config: ConfigT, *, source: str, tickers: tuple[str, ...]) -> None:
        self.config = config
        self.source = source
        self.tickers = tickers

    def lookback(self) -> int:
        """How many daily bars `compute` needs to see (ignored when `inputs` is not "bars")."""
        return 0

    @abstractmethod
    def compute(self, data: Any, tick: Tick) -> list[Signal]:
        """Pure: the signals `data` shows at `tick`. Must not mutate `data` or do I/O."""

    def supersedes(self, stored: Signal, fresh: Signal) -> bool:
        """Whether `fresh` (same id as the recorded `stored`) replaces the stored row's payload,
        without a new publish or dispatch. Default: never (a signal is recorded once); the
        confluence generator updates its composite as later sources join."""
        return False

    def ticker_signal(
        self,
        ticker: str,
        *,
        event_key: str,
        bias: Bias,
        confidence: float,
        reasoning: str,
        metadata: dict[str, Any],
        timestamp: datetime,
        event_time: datetime,
    ) -> Signal:
        """A signal about one ticker. Its id is stable in (source, type, ticker, `event_key`):
        the same event seen by many runs, beats or retries is one signal."""
        return Signal(
            signal_id=stable_signal_id(
                source=self.source,
                signal_type=self.signal_type,
                tickers=(ticker,),
                event_key=event_key,
            ),
            signal_type=self.signal_type,
            tickers=(ticker,),
            bias={
                ticker: SignalBias(
                    ticker=ticker, bias=bias, confidence=confidence, reasoning=reasoning
                )
            },
            metadata=metadata,
            timestamp=timestamp,
            event_time=event_time,
            source=self.source,
        )

    def log_insufficient(self, level: int, **fields: Any) -> None:
        """The `insufficient_data` event: this run yields fewer signals than it could, and why."""
        log_event(
            logging.getLogger(type(self).__module__),
            "insufficient_data",
            level,
            source=self.source,
            generator=self.name,
            **fields,
        )

    def log_too_few_bars(self, bars: Bars, needed: int, purpose: str = "this check") -> None:
        """No signal at all: `bars` is shorter than the `needed` history. `reason` says, per
        ticker, how many bars it has, its last bar's date and what `needed` is for."""
        self.log_insufficient(
            logging.WARNING,
            bars=bars.n_bars,
            needed=needed,
            last_bar=bars.day(bars.n_bars - 1).isoformat() if bars.n_bars else None,
            reason="; ".join(history_shortfalls(bars, needed, purpose)) or f"no tickers: {purpose}",
            tickers=list(bars.tickers[:20]),
            n_tickers=len(bars.tickers),
        )

    def log_short_history(self, bars: Bars, needed: int, purpose: str) -> None:
        """The tickers that lack `needed` consecutive bars ending on the frame's last day (too
        few bars, none on that day, or a gap): one event naming each, with what it has."""
        short = short_rows(bars, needed)
        if short.size:
            self.log_insufficient(
                logging.INFO,
                needed=needed,
                last_bar=bars.day(bars.n_bars - 1).isoformat() if bars.n_bars else None,
                reason="; ".join(history_shortfalls(bars, needed, purpose)[:20]),
                tickers=[bars.tickers[i] for i in short[:20]],
                n_tickers=int(short.size),
            )

    def log_undefined_on_last_bar(self, bars: Bars, undefined: Any, reason: str) -> None:
        """Tickers (rows where `undefined` is true) whose indicator the last bar lacks."""
        import numpy as np

        if undefined.any():
            short_of = [bars.tickers[i] for i in np.flatnonzero(undefined)]
            self.log_insufficient(
                logging.INFO, reason=reason, tickers=short_of[:20], n_tickers=len(short_of)
            )


def short_rows(bars: Bars, needed: int) -> npt.NDArray[np.intp]:
    """Rows of the tickers without a close on each of the frame's last `needed` days."""
    import numpy as np

    if bars.n_bars < needed:
        return np.arange(len(bars.tickers))
    return np.flatnonzero(~np.isfinite(bars.close[:, bars.n_bars - needed :]).all(axis=1))


def history_shortfalls(bars: Bars, needed: int, purpose: str) -> list[str]:
    """Why each ticker short of `needed` consecutive daily bars ending on the frame's last day is
    short, exactly: "AAPL: 4 daily bars (last 2025-11-28), 201 needed for <purpose>", "INTC: no
    bar on 2025-11-28 (last 2004-04-08), ...", or "NVDA: 3 of the last 201 days without a bar
    (first 2025-03-04), ...". Pure."""
    import numpy as np

    reasons = []
    last_day = bars.day(bars.n_bars - 1).isoformat() if bars.n_bars else None
    for row in short_rows(bars, needed).tolist():
        ticker = bars.tickers[row]
        present = np.isfinite(bars.close[row])
        have = int(present.sum())
        if not have:
            reasons.append(f"{ticker}: no daily bars, {needed} needed for {purpose}")
            continue
        last = bars.day(int(np.flatnonzero(present)[-1])).isoformat()
        if have < needed:
            reasons.append(
                f"{ticker}: {have} daily bar{'s' if have != 1 else ''} (last {last}), "
                f"{needed} needed for {purpose}"
            )
        elif not present[-1]:
            reasons.append(
                f"{ticker}: no bar on {last_day} (last {last}), {needed} bars up to it needed "
                f"for {purpose}"
            )
        else:
            window = present[bars.n_bars - needed :]
            gap = bars.day(bars.n_bars - needed + int(np.flatnonzero(~window)[0])).isoformat()
            reasons.append(
                f"{ticker}: {int((~window).sum())} of the last {needed} days without a bar "
                f"(first {gap}), {needed} in a row needed for {purpose}"
            )
    return reasons


def utc_today(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(UTC).date()
