"""Schedule slots of periodic pipelines (pure: the clock is an argument).

A slot is the start of the schedule period a moment falls in: for an interval of N seconds,
the latest multiple of N seconds since the Unix epoch; for a crontab, the latest minute at or
before the moment that the crontab matches. The slot is the idempotency key of a periodic run
(`slot:<iso>`), so two beats, or a tick retried, claim the same slot and run it once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.pipeline import Schedule

#: How far back a crontab slot is searched (covers yearly and leap-day schedules).
_MAX_LOOKBACK_DAYS = 366 * 8 + 2

CronFields = tuple[frozenset[int], ...]


def interval_slot(interval_seconds: int, now: datetime) -> datetime:
    """The start of the interval containing `now`, aligned on the Unix epoch."""
    _require_aware(now)
    epoch = int(now.timestamp())
    start = epoch - epoch % interval_seconds
    return datetime.fromtimestamp(start, UTC)


def cron_slot(fields: CronFields, now: datetime) -> datetime | None:
    """The latest minute <= `now` (UTC) the crontab fields match, or None if none in ~8 years.

    `fields` are (minutes, hours, days of month, months, days of week with 0=Sunday); every
    field must match (Celery's semantics).
    """
    _require_aware(now)
    minutes, hours, days, months, weekdays = fields
    current = now.astimezone(UTC).replace(second=0, microsecond=0)
    sorted_hours = sorted(hours, reverse=True)
    sorted_minutes = sorted(minutes, reverse=True)
    day = current.replace(hour=0, minute=0)
    for offset in range(_MAX_LOOKBACK_DAYS):
        candidate_day = day - timedelta(days=offset)
        if (
            candidate_day.month not in months
            or candidate_day.day not in days
            or (candidate_day.isoweekday() % 7) not in weekdays
        ):
            continue
        for hour in sorted_hours:
            if offset == 0 and hour > current.hour:
                continue
            for minute in sorted_minutes:
                if offset == 0 and hour == current.hour and minute > current.minute:
                    continue
                return candidate_day.replace(hour=hour, minute=minute)
    return None


def current_slot(
    schedule: Schedule, now: datetime, cron_fields: CronFields | None = None
) -> datetime | None:
    """The slot `now` falls in for `schedule` (pass `cron_fields` to skip re-parsing)."""
    if schedule.interval_seconds is not None:
        return interval_slot(schedule.interval_seconds, now)
    return cron_slot(cron_fields or schedule.cron_fields(), now)


def slot_key(slot: datetime) -> str:
    """The claims-table idempotency key of a slot."""
    return "slot:" + slot.astimezone(UTC).isoformat(timespec="seconds")


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
