"""History backfill: fetch exactly the daily bars the store is missing, once.

Planning is pure (`history_window`, `plan_backfill`): given the exchange's sessions of the
window a ticker needs (the last `needed` closed sessions, or every session since a date) and the
days the store holds in it, the ranges to ask for are the sessions before the first bar held
and after the last one (the whole window when none is held). Re-running asks only for what is
still missing; a complete ticker costs no request. What a provider was already asked for is
remembered (`AskedMemory`, in Redis), so a ticker whose history cannot be completed (a recent
listing, an unknown symbol) is not asked again for the same range while the memory lasts.

`run_backfill` is the edge: per ticker it plans from the store, takes a slot from the
provider's shared limiter (`signalgen.marketdata.limiter`, every worker and the command line on
one budget), fetches, upserts (labelled `<provider>-history`, a complete daily bar) and reports.
A rate-limited provider stops the run (the rest is reported `rate_limited` with when to retry),
and so does a refused key; any other failure is that ticker's alone.

The automatic part (`tasks/backfill.py`): when a `generate` worker starts, every watchlist ticker
short of its enabled generators' longest lookback gets one `marketdata.backfill` task, claimed by
a Redis marker per ticker (`claim_backfill`, SET NX with a TTL: one task whatever the number of
workers); a generate check whose tickers are short waits, bounded, while their backfills are
queued or running (`waiting_backfills`), so its first check has the history. The marker's value
says where the backfill is: `pending` (queued), `running`, `retry` (waiting for a provider's
Retry-After: checks do not wait for it), `done:<status>`. A check still short after its wait
enqueues what is unclaimed and reports it as `backfilling`. All of it only when a history source
is configured (`backfill_off_reason`: `HISTORY_SOURCE` set, not `signalgen dev`, no sample bars
in the store): offline development and tests never reach a provider by themselves.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select

from signalgen.logs import log_event, redact
from signalgen.marketdata.calendar import MarketCalendar
from signalgen.marketdata.errors import (
    EntitlementError,
    MarketDataError,
    ProviderAuthError,
    RateLimitedError,
)
from signalgen.marketdata.history import PROVIDERS, HistorySource, SymbolNotFoundError
from signalgen.marketdata.limiter import RateLimiter, RedisRateLimiter, memory_rate_limiter
from signalgen.marketdata.store import BarStore

logger = logging.getLogger(__name__)

#: How long what a provider was asked is remembered (a short ticker is asked again after it).
ASKED_TTL_SECONDS = 7 * 86_400
#: How long a ticker's automatic backfill marker lives: at most one task per ticker per TTL.
PENDING_TTL_SECONDS = 6 * 3600
#: Label suffix of backfilled bars in the store (complete daily bars).
HISTORY_LABEL = "-history"


# -- planning (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DateRange:
    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"empty date range {self.start} .. {self.end}")

    def covers(self, other: DateRange) -> bool:
        return self.start <= other.start and other.end <= self.end

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


@dataclass(frozen=True, slots=True)
class BackfillPlan:
    """What a ticker needs: its `window` of `sessions`, how many it holds, what to fetch."""

    ticker: str
    window: DateRange
    sessions: int
    held: int
    fetch: tuple[DateRange, ...]

    @property
    def complete(self) -> bool:
        return not self.fetch


def history_window(
    calendar: MarketCalendar, end: date, *, needed: int | None = None, since: date | None = None
) -> list[date]:
    """The sessions a ticker's history should hold, ending on `end`: every session from
    `since`, else the last `needed`. ValueError when neither is given or the window is empty."""
    if since is not None:
        sessions = calendar.sessions_between(since, end)
    elif needed is not None and needed > 0:
        span = timedelta(days=needed * 7 // 5 + 30)
        sessions = calendar.sessions_between(end - span, end)[-needed:]
    else:
        raise ValueError("a history window needs `needed` (> 0) or `since`")
    if not sessions:
        raise ValueError(f"no {calendar.name} session between {since or '?'} and {end}")
    return sessions


def plan_backfill(
    ticker: str,
    sessions: Sequence[date],
    stored: Sequence[date],
    *,
    asked: DateRange | None = None,
) -> BackfillPlan:
    """Pure: the ranges of `sessions` (ascending) missing before the first and after the last
    day `stored` holds in the window; all of it when it holds none. A range `asked` already
    covers (the provider answered it before) is not asked again. Holes between held bars are
    not fetched: a provider lacking one day would be asked for it forever."""
    if not sessions:
        raise ValueError("plan_backfill needs at least one session")
    window = DateRange(sessions[0], sessions[-1])
    held = sorted({day for day in stored if window.start <= day <= window.end})
    wanted: list[DateRange] = []
    if not held:
        wanted.append(window)
    else:
        if sessions[0] < held[0]:
            wanted.append(DateRange(sessions[0], held[0] - timedelta(days=1)))
        if sessions[-1] > held[-1]:
            wanted.append(DateRange(held[-1] + timedelta(days=1), sessions[-1]))
    session_set = set(sessions)
    fetch = tuple(
        part
        for part in wanted
        if not (asked is not None and asked.covers(part))
        and any(part.start <= day <= part.end for day in session_set)
    )
    return BackfillPlan(ticker, window, len(sessions), len(held), fetch)


# -- memory of what was asked -------------------------------------------------------------------


class AskedMemory(Protocol):
    """The span of dates a provider was asked for a ticker (one range per provider and ticker)."""

    def get(self, source: str, ticker: str) -> DateRange | None: ...

    def record(self, source: str, ticker: str, asked: DateRange) -> None: ...


class MemoryAsked:
    """Per process (tests, or no Redis)."""

    def __init__(self) -> None:
        self._asked: dict[tuple[str, str], DateRange] = {}

    def get(self, source: str, ticker: str) -> DateRange | None:
        return self._asked.get((source, ticker))

    def record(self, source: str, ticker: str, asked: DateRange) -> None:
        self._asked[(source, ticker)] = _union(self._asked.get((source, ticker)), asked)


class RedisAsked:
    """Shared by every worker and the command line: one hash per provider and ticker, with a TTL."""

    def __init__(self, client: Any, *, ttl_seconds: int = ASKED_TTL_SECONDS) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds

    @staticmethod
    def key(source: str, ticker: str) -> str:
        return f"signalgen:history:asked:{source}:{ticker}"

    def get(self, source: str, ticker: str) -> DateRange | None:
        raw = self.client.hmget(self.key(source, ticker), "start", "end")
        if raw[0] is None or raw[1] is None:
            return None
        return DateRange(date.fromisoformat(_text(raw[0])), date.fromisoformat(_text(raw[1])))

    def record(self, source: str, ticker: str, asked: DateRange) -> None:
        merged = _union(self.get(source, ticker), asked)
        key = self.key(source, ticker)
        self.client.hset(
            key, mapping={"start": merged.start.isoformat(), "end": merged.end.isoformat()}
        )
        self.client.expire(key, self.ttl_seconds)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _union(old: DateRange | None, new: DateRange) -> DateRange:
    if old is None:
        return new
    # Asks extend held history at either end, so the asked span is one range.
    return DateRange(min(old.start, new.start), max(old.end, new.end))


# -- the store's side -----------------------------------------------------------------------------


def stored_days(store: BarStore, ticker: str, window: DateRange) -> list[date]:
    """The days `store` holds for `ticker` within `window`."""
    from signalgen.storage.models import Bar

    query = select(Bar.day).where(
        Bar.ticker == ticker, Bar.day >= window.start, Bar.day <= window.end
    )
    with store.database.session() as session:
        return list(session.scalars(query).all())


def bar_counts(store: BarStore, tickers: Sequence[str]) -> dict[str, int]:
    """Bars held per ticker (0 for a ticker without any), in one query."""
    from signalgen.storage.models import Bar

    if not tickers:
        return {}
    query = (
        select(Bar.ticker, func.count()).where(Bar.ticker.in_(list(tickers))).group_by(Bar.ticker)
    )
    with store.database.session() as session:
        counts = {ticker: int(n) for ticker, n in session.execute(query).all()}
    return {ticker: counts.get(ticker, 0) for ticker in tickers}


def short_tickers(store: BarStore, tickers: Sequence[str], needed: int) -> list[str]:
    """The tickers holding fewer than `needed` bars, in the order given."""
    counts = bar_counts(store, list(dict.fromkeys(tickers)))
    return [ticker for ticker, n in counts.items() if n < needed]


class NoSlotError(RateLimitedError):
    """Our own shared limiter gave no slot in time: the provider's limit is spent for now."""


# -- running -------------------------------------------------------------------------------------


@dataclass
class TickerBackfill:
    """One ticker's outcome. `status`: complete (nothing was missing), filled, short (the
    provider has less history than wanted), not_found, rate_limited, failed."""

    ticker: str
    status: str = "complete"
    requests: int = 0
    written: int = 0
    held: int = 0
    wanted: int = 0
    fetched: list[str] = field(default_factory=list)
    reason: str | None = None


@dataclass
class BackfillReport:
    source: str
    tickers: list[TickerBackfill] = field(default_factory=list)
    #: Seconds until the provider takes requests again, when a limit stopped the run.
    retry_after: float | None = None

    @property
    def requests(self) -> int:
        return sum(item.requests for item in self.tickers)

    @property
    def written(self) -> int:
        return sum(item.written for item in self.tickers)

    def count(self, status: str) -> int:
        return sum(1 for item in self.tickers if item.status == status)

    @property
    def ok(self) -> bool:
        return all(item.status in ("complete", "filled", "short") for item in self.tickers)

    def summary(self) -> str:
        """One line: what the run did, and when to come back if a limit stopped it."""
        parts = [
            f"{len(self.tickers)} tickers from {self.source}",
            f"{self.written} bars written",
            f"{self.requests} requests",
        ]
        for status in ("filled", "complete", "short", "not_found", "rate_limited", "failed"):
            n = self.count(status)
            if n:
                parts.append(f"{n} {status.replace('_', ' ')}")
        line = "backfill: " + ", ".join(parts)
        if self.retry_after is not None:
            line += f"; retry after {self.retry_after:.0f}s"
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "requests": self.requests,
            "written": self.written,
            "retry_after": self.retry_after,
            "tickers": {
                item.ticker: {
                    "status": item.status,
                    "requests": item.requests,
                    "written": item.written,
                }
                for item in self.tickers
            },
        }


def history_limiter(source: str, client: Any | None, account: str = "") -> RateLimiter | None:
    """The shared limiter of `source`'s free-plan limits (None when it has none of its own:
    Finnhub candles use Finnhub's limiter, files need none). Without `client`, per process."""
    spec = PROVIDERS.get(source)
    if spec is None or not spec.limits:
        return None
    suffix = hashlib.sha256(account.encode()).hexdigest()[:12] if account else "keyless"
    key = f"signalgen:ratelimit:history:{source}:{suffix}"
    if client is None:
        return memory_rate_limiter(spec.limits, key=key)
    return RedisRateLimiter(client, spec.limits, key=key)


def run_backfill(
    store: BarStore,
    source: HistorySource,
    tickers: Sequence[str],
    *,
    calendar: MarketCalendar,
    needed: int | None = None,
    since: date | None = None,
    now: datetime | None = None,
    limiter: RateLimiter | None = None,
    asked: AskedMemory | None = None,
    limiter_timeout: float = 120.0,
    request_timeout: float | None = None,
    on_ticker: Callable[[TickerBackfill], None] | None = None,
) -> BackfillReport:
    """Fill each ticker's missing history from `source`; never raises for a ticker.

    The window ends on the last session closed at `now` (today's bar comes from quotes) and
    holds the last `needed` sessions, or every session from `since`. `on_ticker(result)` is
    called after each ticker (a progress bar). `limiter_timeout` bounds each wait for a slot.
    """
    moment = now or datetime.now(UTC)
    end = calendar.last_closed_session(moment).day
    sessions = history_window(calendar, end, needed=needed, since=since)
    memory = asked or MemoryAsked()
    report = BackfillReport(source.name)
    stop: str | None = None
    for ticker in dict.fromkeys(tickers):
        item = TickerBackfill(ticker)
        report.tickers.append(item)
        if stop is not None:
            item.status, item.reason = (
                "rate_limited" if report.retry_after is not None else "failed",
                stop,
            )
        else:
            stop = _backfill_one(
                store,
                source,
                item,
                sessions,
                memory,
                limiter,
                limiter_timeout,
                request_timeout,
                report,
            )
        _log(source.name, item)
        if on_ticker is not None:
            on_ticker(item)
    return report


def _backfill_one(
    store: BarStore,
    source: HistorySource,
    item: TickerBackfill,
    sessions: Sequence[date],
    memory: AskedMemory,
    limiter: RateLimiter | None,
    limiter_timeout: float,
    request_timeout: float | None,
    report: BackfillReport,
) -> str | None:
    """One ticker; returns the reason the whole run must stop (a limit, a refused key)."""
    ticker = item.ticker
    window = DateRange(sessions[0], sessions[-1])
    try:
        plan = plan_backfill(
            ticker,
            sessions,
            stored_days(store, ticker, window),
            asked=memory.get(source.name, ticker),
        )
    except Exception as exc:  # the store or Redis: this ticker fails, the next may not
        item.status, item.reason = (
            "failed",
            f"planning: {type(exc).__name__}: {redact(str(exc))[:200]}",
        )
        return None
    item.held, item.wanted = plan.held, plan.sessions
    if plan.complete:
        item.status = "complete" if plan.held >= plan.sessions else "short"
        if item.status == "short":
            item.reason = "the provider was already asked for the missing range"
        return None
    try:
        for part in plan.fetch:
            if limiter is not None and not limiter.acquire(block=True, timeout=limiter_timeout):
                raise NoSlotError(
                    f"no slot from the shared {source.name} limiter within {limiter_timeout:g}s "
                    "(the provider's free limit is reached for now)",
                    retry_after=limiter_timeout,
                )
            item.requests += 1
            try:
                rows = source.daily_bars(ticker, part.start, part.end, timeout=request_timeout)
            except SymbolNotFoundError:
                memory.record(source.name, ticker, part)
                raise
            if limiter is not None:
                limiter.on_success()
            memory.record(source.name, ticker, part)
            item.fetched.append(str(part))
            item.written += store.upsert_bars(ticker, rows, source=f"{source.name}{HISTORY_LABEL}")
    except RateLimitedError as exc:
        if limiter is not None and not isinstance(exc, NoSlotError):
            limiter.on_rate_limited(exc.retry_after)  # the provider said so: slow every worker
        item.status, item.reason = "rate_limited", redact(str(exc))[:300]
        report.retry_after = exc.retry_after if exc.retry_after is not None else 60.0
        return item.reason
    except SymbolNotFoundError as exc:
        item.status, item.reason = "not_found", redact(str(exc))[:300]
        return None
    except (ProviderAuthError, EntitlementError) as exc:
        item.status, item.reason = "failed", redact(str(exc))[:300]
        return item.reason
    except MarketDataError as exc:
        item.status, item.reason = "failed", redact(str(exc))[:300]
        return None
    except Exception as exc:  # a bug or a database hiccup: this ticker's alone
        item.status, item.reason = "failed", f"{type(exc).__name__}: {redact(str(exc))[:300]}"
        return None
    held = len(stored_days(store, ticker, window))
    item.held = held
    item.status = "filled" if held >= plan.sessions else "short"
    if item.status == "short":
        item.reason = f"{source.name} has {held} of {plan.sessions} sessions from {window}"
    return None


def _log(source: str, item: TickerBackfill) -> None:
    level = logging.INFO if item.status in ("complete", "filled") else logging.WARNING
    log_event(
        logger,
        "history_backfill",
        level,
        ticker=item.ticker,
        source=source,
        status=item.status,
        requests=item.requests,
        written=item.written,
        held=item.held,
        wanted=item.wanted,
        fetched=item.fetched,
        reason=item.reason,
    )


# -- the automatic part's marker ------------------------------------------------------------------


def pending_key(ticker: str) -> str:
    return f"signalgen:history:backfill:{ticker}"


#: Marker values of a backfill not finished: queued, running, waiting for a provider's limit.
UNFINISHED_STATES = frozenset({"pending", "running", "retry"})
#: Of those, the ones a generate check waits for (a `retry` may sleep for hours).
IN_FLIGHT_STATES = frozenset({"pending", "running"})


def claim_backfill(client: Any, ticker: str, *, ttl_seconds: int = PENDING_TTL_SECONDS) -> bool:
    """Take the ticker's backfill marker (SET NX, with a TTL): True for the one caller that
    should enqueue its backfill; False while another backfill is pending or ran recently."""
    return bool(client.set(pending_key(ticker), "pending", nx=True, ex=ttl_seconds))


def mark_backfill(client: Any, ticker: str, state: str) -> None:
    """Say where the ticker's backfill is (`running`, `retry`); only while its marker lives."""
    client.set(pending_key(ticker), state, xx=True, keepttl=True)


def finish_backfill(client: Any, ticker: str, status: str) -> None:
    """Mark the ticker's backfill done (the marker keeps its TTL: no new task before it ends)."""
    mark_backfill(client, ticker, f"done:{status}")


def backfill_states(client: Any, tickers: Sequence[str]) -> dict[str, str | None]:
    """Each ticker's marker value (None: no backfill claimed in the last TTL)."""
    if not tickers:
        return {}
    values = client.mget([pending_key(ticker) for ticker in tickers])
    return {t: None if v is None else _text(v) for t, v in zip(tickers, values, strict=True)}


def pending_backfills(client: Any, tickers: Sequence[str]) -> list[str]:
    """The tickers whose backfill is enqueued, running or waiting for a provider's limit."""
    states = backfill_states(client, tickers)
    return [t for t, state in states.items() if state in UNFINISHED_STATES]


def waiting_backfills(client: Any, tickers: Sequence[str]) -> list[str]:
    """The tickers whose backfill is enqueued or running: what a check waits for."""
    states = backfill_states(client, tickers)
    return [t for t, state in states.items() if state in IN_FLIGHT_STATES]


def lookbacks(specs: Any) -> dict[str, int]:
    """Per watchlist ticker, the longest lookback of the enabled bar generators using it."""
    needed: dict[str, int] = {}
    for spec in specs.values():
        generator = spec.generator
        if generator.inputs != "bars":
            continue
        n = int(generator.lookback())
        if n <= 0:
            continue
        for ticker in generator.tickers:
            needed[ticker] = max(needed.get(ticker, 0), n)
    return needed


def holds_sample_bars(store: BarStore) -> bool:
    """Whether the store holds any bundled sample bar (`signalgen dev`'s demo history)."""
    from signalgen.storage.models import Bar

    query = select(Bar.ticker).where(Bar.source == "sample").limit(1)
    with store.database.session() as session:
        return session.scalars(query).first() is not None


def backfill_off_reason(settings: Any, store: BarStore | None = None) -> str | None:
    """Why history is not backfilled automatically (None: it is). Only a configured
    source is asked: `HISTORY_SOURCE` set in the environment (or `.env`); never under
    `signalgen dev` nor over the bundled sample bars (offline, and tests, never reach out)."""
    if "history_source" not in settings.model_fields_set:
        return "HISTORY_SOURCE is not set"
    if getattr(settings, "signalgen_dev", False):
        return "signalgen dev (sample data)"
    if store is not None and holds_sample_bars(store):
        return "the bar store holds sample bars"
    return None


def backfill_from_settings(
    settings: Any,
    database: Any,
    tickers: Sequence[str],
    *,
    needed: int,
    redis_client: Any,
    limiter_timeout: float = 60.0,
) -> BackfillReport:
    """One worker's backfill of `tickers` from `HISTORY_SOURCE`: the shared limiter and the
    memory of what was asked in Redis, the calendar of `MARKET_CALENDAR`. ValueError (named
    setting) when the source is not configured."""
    from signalgen.marketdata.calendar import market_calendar
    from signalgen.marketdata.providers import history_source

    source = history_source(settings, database=database)
    account = ""
    if source.name == "tiingo" and settings.tiingo_api_key is not None:
        account = settings.tiingo_api_key.get_secret_value()
    if source.name == "alphavantage" and settings.alphavantage_api_key is not None:
        account = settings.alphavantage_api_key.get_secret_value()
    return run_backfill(
        BarStore(database),
        source,
        tickers,
        calendar=market_calendar(settings.market_calendar),
        needed=needed,
        limiter=history_limiter(source.name, redis_client, account),
        asked=RedisAsked(redis_client),
        limiter_timeout=limiter_timeout,
    )
