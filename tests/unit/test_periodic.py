"""Schedule slots: interval alignment, crontab (Celery semantics), stable keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.periodic import cron_slot, current_slot, interval_slot, slot_key
from schemas.pipeline import Schedule


def cron(expression: str) -> tuple[frozenset[int], ...]:
    return Schedule(crontab=expression).cron_fields()


def test_interval_slot_aligned_on_epoch() -> None:
    now = datetime(2025, 3, 4, 10, 7, 31, 500, tzinfo=UTC)
    assert interval_slot(60, now) == datetime(2025, 3, 4, 10, 7, tzinfo=UTC)
    assert interval_slot(3600, now) == datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    assert interval_slot(7, now).timestamp() % 7 == 0


def test_same_slot_until_the_next_boundary() -> None:
    start = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    assert {interval_slot(300, start + timedelta(seconds=s)) for s in range(0, 300, 13)} == {start}
    assert interval_slot(300, start + timedelta(seconds=300)) == start + timedelta(minutes=5)


def test_cron_slot_basic() -> None:
    now = datetime(2025, 3, 4, 10, 7, 59, tzinfo=UTC)  # a Tuesday
    assert cron_slot(cron("*/15 * * * *"), now) == datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    assert cron_slot(cron("* * * * *"), now) == datetime(2025, 3, 4, 10, 7, tzinfo=UTC)
    assert cron_slot(cron("30 9 * * *"), now) == datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
    assert cron_slot(cron("30 11 * * *"), now) == datetime(2025, 3, 3, 11, 30, tzinfo=UTC)
    # Weekdays only: on Monday 2025-03-03 08:00 the last 16:00 weekday slot is Friday's.
    monday = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
    assert cron_slot(cron("0 16 * * 1-5"), monday) == datetime(2025, 2, 28, 16, 0, tzinfo=UTC)
    # Sunday is 0.
    assert cron_slot(cron("0 0 * * 0"), now) == datetime(2025, 3, 2, tzinfo=UTC)


def test_cron_slot_leap_day() -> None:
    now = datetime(2025, 3, 1, tzinfo=UTC)
    assert cron_slot(cron("0 12 29 2 *"), now) == datetime(2024, 2, 29, 12, 0, tzinfo=UTC)


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
    ),
    st.sampled_from(["*/7 * * * *", "5 */3 * * *", "0 9 1-7 * 1", "15 14 * 6 *", "0 0 1 1 *"]),
)
def test_cron_slot_is_latest_match(now: datetime, expression: str) -> None:
    fields = cron(expression)
    slot = cron_slot(fields, now)
    assert slot is not None and slot <= now

    def matches(moment: datetime) -> bool:
        minutes, hours, days, months, weekdays = fields
        return (
            moment.minute in minutes
            and moment.hour in hours
            and moment.day in days
            and moment.month in months
            and moment.isoweekday() % 7 in weekdays
        )

    assert matches(slot)
    # No matching minute between the slot and now (checked minute by minute up to a day).
    probe = now.replace(second=0, microsecond=0)
    for _ in range(min(int((now - slot).total_seconds() // 60), 1440)):
        assert not matches(probe) or probe == slot
        probe -= timedelta(minutes=1)


def test_slot_key_stable_and_naive_refused() -> None:
    schedule = Schedule(interval_seconds=60)
    now = datetime(2025, 3, 4, 10, 7, 31, tzinfo=UTC)
    assert slot_key(current_slot(schedule, now)) == "slot:2025-03-04T10:07:00+00:00"  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        interval_slot(60, datetime(2025, 1, 1))
