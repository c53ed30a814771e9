"""An interval schedule aligned to the epoch, so every beat process fires the same slots.

Celery's own `schedule(run_every)` counts from each beat's start, so two beats (or one restarted)
fire at different moments, and the work they trigger derives different slot identities. Here a
slot is `[k*interval, (k+1)*interval)` since the epoch: a run is due once per slot, as soon as the
slot has begun, and the slot a task runs in is the one `Tick.for_slot` derives, in every process.

`is_due` is pure given the clock (`nowfun`), which tests inject. `plan_send` (pure too) says what
beat sends for an entry in the slot holding `now`: the slot's identity (the key of its
send-once marker, see tasks/beatlock.py), the moment it was sent as the task's `slot_time` (so
the worker runs the slot beat meant, whenever the message arrives), and an absolute `expires`
no later than the slot's end (a tick never runs in a later slot, where beat sends that slot's own
tick: one slot, one run).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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

    def slot_index(self, moment: datetime) -> int:
        """Number of the slot holding `moment` since the epoch (the same in every process)."""
        return math.floor(_aware(moment).timestamp() / self.seconds)

    def slot_start(self, moment: datetime) -> datetime:
        """Start of the slot holding `moment`."""
        return datetime.fromtimestamp(self.slot_index(moment) * self.seconds, UTC)

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


#: Tasks told when beat sent them, and the keyword that says it: the worker derives the slot from
#: it, not from its own clock when the message arrives (which may be in the next slot).
SLOT_KWARGS: dict[str, str] = {"signals.generate": "slot_time"}

#: How long a send-once marker outlives its slot (clock skew between beats, a slow send).
MARKER_GRACE_SECONDS = 60


@dataclass(frozen=True)
class SlotSend:
    """What beat sends for one entry in one slot.

    Attributes:
        key: the slot's identity, the same in every beat: `<entry>:<interval>s:<slot number>`.
        slot_start / slot_end: the slot's bounds.
        kwargs / options: the entry's, plus the slot keyword (`SLOT_KWARGS`) and an absolute
            `expires` (the entry's relative one from `now`, but never past the slot's end).
        marker_ttl: seconds the send-once marker must live: to the slot's end, plus a grace.
    """

    key: str
    slot_start: datetime
    slot_end: datetime
    kwargs: dict[str, Any]
    options: dict[str, Any]
    marker_ttl: int


def plan_send(
    name: str,
    task: str,
    schedule: AlignedSchedule,
    now: datetime,
    *,
    kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> SlotSend:
    """The send of entry `name` (task `task`) in the slot holding `now`. Pure."""
    now = _aware(now)
    start = schedule.slot_start(now)
    end = start + schedule.run_every
    sent_options = dict(options or {})
    lifetime = sent_options.get("expires")
    expires = end  # absent: the slot's end
    if isinstance(lifetime, datetime):
        expires = min(_aware(lifetime), end)
    elif isinstance(lifetime, int | float) and not isinstance(lifetime, bool):
        expires = min(now + timedelta(seconds=float(lifetime)), end)
    sent_options["expires"] = expires
    sent_kwargs = dict(kwargs or {})
    keyword = SLOT_KWARGS.get(task)
    if keyword is not None:
        sent_kwargs[keyword] = now.isoformat()
    return SlotSend(
        key=f"{name}:{schedule.seconds:g}s:{schedule.slot_index(now)}",
        slot_start=start,
        slot_end=end,
        kwargs=sent_kwargs,
        options=sent_options,
        marker_ttl=math.ceil((end - now).total_seconds()) + MARKER_GRACE_SECONDS,
    )


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
    from signalgen.bus.topology import GENERATE_QUEUE, PIPELINES_QUEUE, SIGNALS_QUEUE
    from signalgen.config import enabled_generators

    schedule = {
        f"generate:{name}": periodic_entry(
            "signals.generate", spec.interval_seconds, queue=GENERATE_QUEUE, args=(name,)
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
    from signalgen.settings import get_settings

    return get_settings().repair_interval_seconds
