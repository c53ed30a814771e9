"""Provider cost per generator, and the budget that pauses a generator's provider calls.

Counts come from `provider_calls` (every Finnhub call, per generator, endpoint and hour; see
`signalgen.marketdata.usage`); the estimated cost is calls x `cost_per_call` of the provider
(`config/operations.json`).

Budgets are enforced before each call by `BudgetGuard.reserve`: one Lua script in Redis checks
the generator's hourly and daily counters against its budget and takes one unit from both, in
one atomic step, so concurrent workers cannot overspend the last unit. A counter that does not
exist yet for its hour/day is seeded from the database's count first, so a Redis restart does not
hand out a fresh budget. An exhausted budget raises `BudgetExhausted` (a permanent provider
error, never retried); the refresh path logs it with its reason and the generator keeps running
on stored bars until the next hour or day.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select

from signalgen.config.operations import Budget, OperationsConfig
from signalgen.logs import log_event
from signalgen.marketdata.errors import PermanentProviderError
from signalgen.storage import Database
from signalgen.storage.models import ProviderCall

logger = logging.getLogger("signalgen.marketdata.costs")

Period = Literal["hour", "day"]

#: KEYS: hour counter, day counter. ARGV: hour limit, day limit (-1: none), hour ttl, day ttl.
#: Returns {1, hour count, day count} when a unit was taken, {0, 'hour'|'day', count} if not.
_RESERVE_LUA = """
local hour = tonumber(redis.call('GET', KEYS[1]) or '0')
local day = tonumber(redis.call('GET', KEYS[2]) or '0')
local hour_limit = tonumber(ARGV[1])
local day_limit = tonumber(ARGV[2])
if hour_limit >= 0 and hour >= hour_limit then return {0, 'hour', hour} end
if day_limit >= 0 and day >= day_limit then return {0, 'day', day} end
hour = redis.call('INCR', KEYS[1])
day = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
return {1, hour, day}
"""


class BudgetExhausted(PermanentProviderError):
    """The generator's provider budget for this hour or day is spent; calls pause until the
    next period. Never retried."""

    def __init__(
        self,
        message: str,
        *,
        generator: str,
        period: Period,
        used: int,
        limit: int,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint)
        self.generator = generator
        self.period = period
        self.used = used
        self.limit = limit


def period_start(moment: datetime, period: Period) -> datetime:
    moment = moment.astimezone(UTC)
    if period == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def calls_between(
    db: Database, *, provider: str, generator: str, start: datetime, end: datetime
) -> int:
    """Calls recorded for (provider, generator) in hours [start, end)."""
    statement = select(func.coalesce(func.sum(ProviderCall.calls), 0)).where(
        ProviderCall.provider == provider,
        ProviderCall.generator == generator,
        ProviderCall.hour >= start,
        ProviderCall.hour < end,
    )
    with db.session() as session:
        return int(session.execute(statement).scalar_one())


@dataclass(eq=False)
class BudgetGuard:
    """Takes one unit of a generator's budget before each provider call (shared via Redis)."""

    client: Any
    config: OperationsConfig
    _: KW_ONLY
    provider: str = "finnhub"
    database: Database | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _script: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._script = self.client.register_script(_RESERVE_LUA)

    def limits(self, generator: str) -> tuple[int | None, int | None]:
        budget: Budget = self.config.budgets.for_generator(generator)
        return budget.calls_per_hour, budget.daily_calls(self.config.cost_of(self.provider))

    def _key(self, generator: str, period: Period, start: datetime) -> str:
        stamp = start.strftime("%Y%m%d%H" if period == "hour" else "%Y%m%d")
        return f"signalgen:budget:{self.provider}:{generator}:{period}:{stamp}"

    def _seed(self, key: str, generator: str, start: datetime, end: datetime, ttl: int) -> None:
        if self.database is None or self.client.exists(key):
            return
        used = calls_between(
            self.database, provider=self.provider, generator=generator, start=start, end=end
        )
        self.client.set(key, used, nx=True, ex=ttl)

    def reserve(self, generator: str, endpoint: str | None = None) -> None:
        """Take one call from `generator`'s budget, or raise BudgetExhausted (logged)."""
        hour_limit, day_limit = self.limits(generator)
        if hour_limit is None and day_limit is None:
            return
        now = self.clock()
        hour, day = period_start(now, "hour"), period_start(now, "day")
        hour_key, day_key = self._key(generator, "hour", hour), self._key(generator, "day", day)
        hour_ttl, day_ttl = 2 * 3600, 2 * 86400
        self._seed(hour_key, generator, hour, hour + timedelta(hours=1), hour_ttl)
        self._seed(day_key, generator, day, day + timedelta(days=1), day_ttl)
        answer = self._script(
            keys=[hour_key, day_key],
            args=[
                -1 if hour_limit is None else hour_limit,
                -1 if day_limit is None else day_limit,
                hour_ttl,
                day_ttl,
            ],
        )
        if int(answer[0]) == 1:
            return
        period: Period = "hour" if _text(answer[1]) == "hour" else "day"
        used = int(answer[2])
        limit = int(hour_limit if period == "hour" else day_limit)  # type: ignore[arg-type]
        resumes = (hour + timedelta(hours=1)) if period == "hour" else (day + timedelta(days=1))
        reason = (
            f"{self.provider} budget of generator {generator!r} exhausted: {used} of "
            f"{limit} calls this {period}; provider calls paused until "
            f"{resumes.isoformat()}"
        )
        # One warning per generator and period; later refusals are debug lines.
        first = self.client.set(
            f"{hour_key if period == 'hour' else day_key}:told",
            1,
            nx=True,
            ex=hour_ttl if period == "hour" else day_ttl,
        )
        log_event(
            logger,
            "generator_budget_exhausted",
            logging.WARNING if first else logging.DEBUG,
            generator=generator,
            provider=self.provider,
            period=period,
            used=used,
            limit=limit,
            resumes_at=resumes.isoformat(),
            reason=reason,
        )
        raise BudgetExhausted(
            reason, generator=generator, period=period, used=used, limit=limit, endpoint=endpoint
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- reporting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostRow:
    period_start: datetime
    provider: str
    generator: str
    calls: int
    errors: int
    cost: float


def cost_by_period(
    db: Database,
    config: OperationsConfig,
    *,
    period: Period = "day",
    since: datetime | None = None,
    until: datetime | None = None,
    generator: str | None = None,
) -> list[CostRow]:
    """Calls, errors and estimated cost per (period, provider, generator), oldest first."""
    statement = select(
        ProviderCall.hour,
        ProviderCall.provider,
        ProviderCall.generator,
        ProviderCall.calls,
        ProviderCall.errors,
    )
    if since is not None:
        statement = statement.where(ProviderCall.hour >= period_start(since, "hour"))
    if until is not None:
        statement = statement.where(ProviderCall.hour < until)
    if generator is not None:
        statement = statement.where(ProviderCall.generator == generator)
    totals: dict[tuple[datetime, str, str], list[int]] = {}
    with db.session() as session:
        for hour, provider, name, calls, errors in session.execute(statement):
            key = (period_start(hour, period), provider, name)
            item = totals.setdefault(key, [0, 0])
            item[0] += int(calls or 0)
            item[1] += int(errors or 0)
    return [
        CostRow(start, provider, name, calls, errors, round(calls * config.cost_of(provider), 6))
        for (start, provider, name), (calls, errors) in sorted(totals.items())
    ]


@dataclass(frozen=True)
class BudgetStatus:
    provider: str
    generator: str
    calls_this_hour: int
    calls_today: int
    cost_today: float
    hour_limit: int | None
    day_limit: int | None

    @property
    def paused(self) -> str | None:
        """ "hour"/"day" when that budget is spent (calls paused), else None."""
        if self.hour_limit is not None and self.calls_this_hour >= self.hour_limit:
            return "hour"
        if self.day_limit is not None and self.calls_today >= self.day_limit:
            return "day"
        return None


def budget_status(
    db: Database,
    config: OperationsConfig,
    *,
    generators: list[str],
    provider: str = "finnhub",
    now: datetime | None = None,
) -> list[BudgetStatus]:
    """Each generator's calls this hour and today against its budget (from the database)."""
    now = now or datetime.now(UTC)
    hour, day = period_start(now, "hour"), period_start(now, "day")
    cost = config.cost_of(provider)
    out = []
    for name in generators:
        budget = config.budgets.for_generator(name)
        today = calls_between(
            db, provider=provider, generator=name, start=day, end=day + timedelta(days=1)
        )
        this_hour = calls_between(
            db, provider=provider, generator=name, start=hour, end=hour + timedelta(hours=1)
        )
        out.append(
            BudgetStatus(
                provider,
                name,
                this_hour,
                today,
                round(today * cost, 6),
                budget.calls_per_hour,
                budget.daily_calls(cost),
            )
        )
    return out
