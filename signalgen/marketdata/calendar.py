"""The exchange's calendar: when it is open, and which session a quote belongs to.

Trading days, hours, half days (early closes) and holidays come from the maintained
`exchange_calendars` library (XNYS, the New York Stock Exchange, by default; `MARKET_CALENDAR`
names another, e.g. `XLON`, or `24/7` for a market that never closes). The library's calendar is
built once per process (`market_calendar`); every question after that is a binary search over
its session opens and closes (UTC), pure and fast.

Definitions the refresh path relies on:

- *open at t*: some session has `open <= t < close` (the close minute is already closed).
- *session of a quote stamped t*: the last session that opened at or before t. A trade stamped
  after the close (or at midnight UTC, which is the New York evening) belongs to that day's
  session, never to the next one, and a quote stamped before today's open is yesterday's.
- *last closed session at t*: the last session whose close is at or before t.

Lunch breaks (some Asian exchanges) are treated as open: a quote then is still the session's.
"""

from __future__ import annotations

import bisect
import functools
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

DEFAULT_CALENDAR = "XNYS"
#: Sessions from this day on are loaded (backtests and tests use history from 2000 on).
CALENDAR_START = "2000-01-03"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CalendarRangeError(ValueError):
    """A time outside the sessions the calendar holds (before 2000, or over a year ahead)."""


@dataclass(frozen=True, slots=True)
class Session:
    """One trading session: its exchange-local date, open and close (aware UTC)."""

    day: date
    open: datetime
    close: datetime
    early_close: bool


def _ns(moment: datetime) -> np.int64:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: give the market calendar aware times")
    delta = moment.astimezone(UTC) - _EPOCH
    return np.int64((delta.days * 86_400 + delta.seconds) * 1_000_000_000) + np.int64(
        delta.microseconds * 1000
    )


def _utc(ns: np.int64) -> datetime:
    return _EPOCH + timedelta(microseconds=int(ns) // 1000)


class MarketCalendar:
    """Questions about one exchange's sessions. Build through `market_calendar(name)`."""

    def __init__(self, name: str = DEFAULT_CALENDAR, *, start: str = CALENDAR_START) -> None:
        import exchange_calendars

        try:
            with warnings.catch_warnings():  # the library's own pandas deprecations, not ours
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                calendar = exchange_calendars.get_calendar(name, start=start)
        except exchange_calendars.errors.InvalidCalendarName:
            raise ValueError(
                f"MARKET_CALENDAR: unknown exchange calendar {name!r} (e.g. XNYS, XNAS, XLON, "
                "24/7; see exchange_calendars.get_calendar_names())"
            ) from None
        self.name = name
        self.tz = ZoneInfo(str(calendar.tz))
        self._days = [ts.date() for ts in calendar.sessions]
        self._index = {day: i for i, day in enumerate(self._days)}
        self._opens = calendar.opens.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        self._closes = calendar.closes.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        self._early = {ts.date() for ts in calendar.early_closes}

    def __repr__(self) -> str:
        return f"MarketCalendar({self.name!r}, {self._days[0]}..{self._days[-1]})"

    # -- internals ---------------------------------------------------------------------------

    def _session(self, i: int) -> Session:
        day = self._days[i]
        return Session(day, _utc(self._opens[i]), _utc(self._closes[i]), day in self._early)

    def _position(self, moment: datetime) -> np.int64:
        t = _ns(moment)
        if t < self._opens[0] or t >= self._closes[-1]:
            raise CalendarRangeError(
                f"{moment.isoformat()} is outside the {self.name} calendar "
                f"({self._days[0]} to {self._days[-1]})"
            )
        return t

    # -- questions ---------------------------------------------------------------------------

    def is_open(self, moment: datetime) -> bool:
        """Whether a session is in progress at `moment` (open <= moment < close)."""
        return self.current_session(moment) is not None

    def current_session(self, moment: datetime) -> Session | None:
        """The session in progress at `moment`, None while the exchange is closed."""
        t = self._position(moment)
        i = int(np.searchsorted(self._closes, t, side="right"))  # first close after t
        if i < len(self._days) and self._opens[i] <= t:
            return self._session(i)
        return None

    def session_of(self, moment: datetime) -> Session:
        """The session a quote stamped `moment` belongs to: the last one opened at or before it."""
        t = self._position(moment)
        return self._session(int(np.searchsorted(self._opens, t, side="right")) - 1)

    def last_closed_session(self, moment: datetime) -> Session:
        """The last session whose close is at or before `moment`."""
        t = self._position(moment)
        i = int(np.searchsorted(self._closes, t, side="right")) - 1
        if i < 0:
            raise CalendarRangeError(f"no {self.name} session closed before {moment.isoformat()}")
        return self._session(i)

    def next_open(self, moment: datetime) -> datetime:
        """The first session open strictly after `moment`."""
        t = self._position(moment)
        i = int(np.searchsorted(self._opens, t, side="right"))
        if i >= len(self._days):
            raise CalendarRangeError(f"no {self.name} session opens after {moment.isoformat()}")
        return _utc(self._opens[i])

    def is_session(self, day: date) -> bool:
        """Whether the exchange trades on `day` (its local date)."""
        return day in self._index

    def session(self, day: date) -> Session:
        """The session on `day`; ValueError naming the day when the exchange is shut then."""
        i = self._index.get(day)
        if i is None:
            raise ValueError(f"{day} is not a {self.name} session (weekend or holiday)")
        return self._session(i)

    def sessions_between(self, start: date, end: date) -> list[date]:
        """Session days from `start` to `end`, both included."""
        return self._days[
            bisect.bisect_left(self._days, start) : bisect.bisect_right(self._days, end)
        ]

    def local_time(self, moment: datetime) -> time:
        return moment.astimezone(self.tz).time()


def market_calendar(name: str | None = None) -> MarketCalendar:
    """The process's calendar for `name` (default: the `MARKET_CALENDAR` setting), built once."""
    if name is None:
        from signalgen.settings import get_settings

        name = get_settings().market_calendar
    return _built(name)


@functools.cache
def _built(name: str) -> MarketCalendar:
    return MarketCalendar(name)
