"""An interval schedule aligned to the epoch, so every beat process fires the same slots.

Celery's own `schedule(run_every)` counts from each beat's start, so two beats (or one restarted)
fire at different moments, and the work they trigger derives different slot identities. Here a
slot is `[k*interval, (k+1)*interval)` since the epoch: a run is due once per slot, as soon as the
slot has begun, and the slot a task runs in is the one `Tick.for_slot` derives, in every process.

`is_due` is pure given the clock (`nowfun`), which tests inject.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery.schedules import BaseSchedule, schedstate

if TYPE_CHECKING:
    from signalgen.settings import Settings

#: `last_run_at` for an entry beat has never run: before any slot, so the current slot fires at
#: start-up (the first signals appear within seconds, not an interval later).
NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class AlignedSchedule(BaseSchedule):
    """Due once per epoch-aligned slot of `seconds`.

    Arguments:
        seconds: the slot length (> 0).
        nowfun: the clock (aware UTC datetimes); Celery's app clock when None.
    """

    def __init__(
        self, seconds: float, nowfun: Callable[[], datetime] | None = None, app: Any = None
    ) -> None:
        if not seconds or seconds <= 0 or not math.isfinite(seconds):
            raise ValueError(f"AlignedSchedule needs a positive interval, got {seconds!r}")
        self.seconds = float(seconds)
        super().__init__(nowfun=nowfun, app=app)

    @property
    def run_every(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def now(self) -> datetime:
        return _aware(super().now())

    def slot_start(self, moment: datetime) -> datetime:
        """Start of the slot holding `moment`."""
        stamp = _aware(moment).timestamp()
        return datetime.fromtimestamp(math.floor(stamp / self.seconds) * self.seconds, UTC)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time until the slot after the one `last_run_at` fell in begins (<= 0: due now)."""
        next_slot = self.slot_start(last_run_at) + self.run_every
        return next_slot - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        """(due, seconds to the next check): due when `now` is in a later slot than the last run.

        The next check is the next slot's start (at least 50 ms away, so beat never spins).
        """
        now = self.now()
        current = self.slot_start(now)
        until_next = (current + self.run_every - now).total_seconds()
        due = _aware(last_run_at) < current
        return schedstate(due, max(until_next, 0.05))

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.seconds, self.nowfun)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AlignedSchedule):
            return self.seconds == other.seconds and self.nowfun == other.nowfun
        return NotImplemented

    def __hash__(self) -> int:
        return hash((AlignedSchedule, self.seconds))

    def __repr__(self) -> str:
        return f"<AlignedSchedule {self.seconds:g}s>"


#: Fraction of its interval after which a beat-sent task is dropped unstarted: after an outage,
#: stale ticks expire instead of piling up, and a task never runs in a later slot than its own.
EXPIRES_FRACTION = 0.5
OUTBOX_SWEEP_SECONDS = 30
FIRE_PERIODIC_SECONDS = 10


def periodic_entry(
    task: str,
    seconds: float,
    *,
    queue: str,
    args: tuple[Any, ...] = (),
) -> dict[str, Any]:
    """One beat entry on an aligned schedule, expiring after a fraction of its interval."""
    return {
        "task": task,
        "schedule": AlignedSchedule(seconds),
        "args": list(args),
        "options": {"queue": queue, "expires": max(1.0, seconds * EXPIRES_FRACTION)},
        # Only used when beat has no record of the entry yet: fire the current slot at start.
        "last_run_at": NEVER,
    }


def build_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Beat's schedule as data: `generate:<name>` per enabled generator, the outbox sweep and
    the periodic-pipeline firing. Raises ConfigError (file and field) on bad configuration."""
    from signalgen.config import enabled_generators
    from tasks.topology import PIPELINES_QUEUE, SIGNALS_QUEUE

    schedule = {
        f"generate:{name}": periodic_entry(
            "signals.generate", spec.interval_seconds, queue=SIGNALS_QUEUE, args=(name,)
        )
        for name, spec in enabled_generators(settings).items()
    }
    schedule["outbox-sweep"] = periodic_entry(
        "signals.outbox_sweep", OUTBOX_SWEEP_SECONDS, queue=SIGNALS_QUEUE
    )
    schedule["pipelines-fire-periodic"] = periodic_entry(
        "pipelines.fire_periodic", FIRE_PERIODIC_SECONDS, queue=PIPELINES_QUEUE
    )
    schedule["bus-repair"] = periodic_entry(
        "signals.repair", _repair_interval(), queue=SIGNALS_QUEUE
    )
    return schedule


def _repair_interval() -> float:
    from dispatcher.repair import RepairSettings

    return RepairSettings().interval_seconds
