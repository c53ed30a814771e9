"""The exchange calendar (exchange_calendars' XNYS): hours over DST changes, a holiday, a half day,
and the session a quote's time belongs to."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from signalgen.marketdata.calendar import CalendarRangeError, MarketCalendar, market_calendar
from signalgen.marketdata.refresh import quote_target


@pytest.fixture(scope="module")
def xnys() -> MarketCalendar:
    return market_calendar("XNYS")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        # Friday 2024-03-08 is in EST (UTC-5): 09:30 ET is 14:30 UTC.
        ("2024-03-08T14:29", False),
        ("2024-03-08T14:30", True),
        ("2024-03-08T20:59", True),
        ("2024-03-08T21:00", False),
        # DST began Sunday 2024-03-10: Monday opens at 13:30 UTC (09:30 EDT).
        ("2024-03-11T13:29", False),
        ("2024-03-11T13:30", True),
        ("2024-03-11T19:59", True),
        ("2024-03-11T20:00", False),
        # DST ended Sunday 2024-11-03: Friday before in EDT, Monday after in EST.
        ("2024-11-01T13:30", True),
        ("2024-11-01T20:00", False),
        ("2024-11-04T13:30", False),
        ("2024-11-04T14:30", True),
        ("2024-11-04T20:59", True),
        # Independence Day: a weekday without a session.
        ("2024-07-04T15:00", False),
        # The day after Thanksgiving is a half day: closes 13:00 ET (18:00 UTC).
        ("2024-11-29T17:59", True),
        ("2024-11-29T18:00", False),
        ("2024-11-29T20:00", False),
        # A weekend.
        ("2024-03-09T16:00", False),
    ],
)
def test_open_over_dst_changes_a_holiday_and_a_half_day(
    xnys: MarketCalendar, moment: str, is_open: bool
) -> None:
    assert xnys.is_open(utc(moment)) is is_open


def test_sessions_half_days_and_holidays(xnys: MarketCalendar) -> None:
    half = xnys.session(date(2024, 11, 29))
    assert half.early_close and half.close == utc("2024-11-29T18:00")
    assert half.open == utc("2024-11-29T14:30")
    assert not xnys.session(date(2024, 11, 27)).early_close
    assert not xnys.is_session(date(2024, 7, 4))
    with pytest.raises(ValueError, match="2024-07-04 is not a XNYS session"):
        xnys.session(date(2024, 7, 4))
    assert xnys.sessions_between(date(2024, 7, 1), date(2024, 7, 8)) == [
        date(2024, 7, 1),
        date(2024, 7, 2),
        date(2024, 7, 3),
        date(2024, 7, 5),
        date(2024, 7, 8),
    ]


def test_a_quote_stamped_at_midnight_utc_belongs_to_the_new_york_session_of_that_evening(
    xnys: MarketCalendar,
) -> None:
    # 00:00 UTC Tuesday is 19:00 EST Monday: Monday's session, never Tuesday's.
    assert xnys.session_of(utc("2024-01-09T00:00")).day == date(2024, 1, 8)
    # A quote from before Tuesday's open is still Monday's, even once Tuesday is open.
    assert xnys.session_of(utc("2024-01-09T14:29")).day == date(2024, 1, 8)
    assert xnys.session_of(utc("2024-01-09T14:30")).day == date(2024, 1, 9)
    # Over a holiday and a weekend: the last session that opened.
    assert xnys.session_of(utc("2024-07-04T15:00")).day == date(2024, 7, 3)
    assert xnys.session_of(utc("2024-07-07T12:00")).day == date(2024, 7, 5)


def test_last_closed_session_and_next_open(xnys: MarketCalendar) -> None:
    assert xnys.last_closed_session(utc("2024-11-29T17:59")).day == date(2024, 11, 27)
    assert xnys.last_closed_session(utc("2024-11-29T18:00")).day == date(2024, 11, 29)
    assert xnys.last_closed_session(utc("2024-12-01T12:00")).day == date(2024, 11, 29)
    assert xnys.next_open(utc("2024-11-29T18:00")) == utc("2024-12-02T14:30")
    assert xnys.next_open(utc("2024-03-08T21:00")) == utc("2024-03-11T13:30")


def test_quote_target_in_hours_and_after_the_close(xnys: MarketCalendar) -> None:
    during = quote_target(xnys, utc("2024-11-29T15:00"))
    assert (during.session.day, during.final) == (date(2024, 11, 29), False)
    after = quote_target(xnys, utc("2024-11-29T18:30"))
    assert (after.session.day, after.final) == (date(2024, 11, 29), True)
    holiday = quote_target(xnys, utc("2024-07-04T15:00"))
    assert (holiday.session.day, holiday.final) == (date(2024, 7, 3), True)


def test_a_24_7_market_is_always_open() -> None:
    always = market_calendar("24/7")
    start = utc("2024-07-06T00:00")  # a Saturday
    assert all(always.is_open(start + timedelta(hours=h)) for h in range(0, 48, 5))


def test_bad_input_is_named(xnys: MarketCalendar) -> None:
    with pytest.raises(ValueError, match="MARKET_CALENDAR: unknown exchange calendar 'NOPE'"):
        MarketCalendar("NOPE")
    with pytest.raises(ValueError, match="naive datetime"):
        xnys.is_open(datetime(2024, 3, 8, 15, 0))
    with pytest.raises(CalendarRangeError, match="outside the XNYS calendar"):
        xnys.is_open(utc("1999-06-01T15:00"))


def test_the_calendar_is_built_once_per_process() -> None:
    assert market_calendar("XNYS") is market_calendar("XNYS")
