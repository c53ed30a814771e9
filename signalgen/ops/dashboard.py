"""Data of the operations dashboard: plain queries and pure arithmetic, JSON-ready.

Bounded in cost whatever the history holds: every aggregate over time reads only the window
(`days`, default 7) through an indexed time column (`signals.created_at`,
`executions.claimed_at`, `provider_calls.hour`), grouped in SQL, so a million signals cost one
index range scan, not a million rows in Python. Buckets are UTC hours for windows up to 7 days,
UTC days beyond. A stored time outside the window, in any year 1..9999, and any non-finite
float are ignored, never a 500.

- generator health: schedule, last run, last signal, state (`signalgen.ops.health`);
- queue depths (the broker) and the outbox backlog (`signals.published_at IS NULL`);
- signals per bucket by type and by ticker; executions per bucket by status; latency
  percentiles per bucket; failures per pipeline; provider calls and cost per generator;
- hit rate per generator: for each (signal, ticker) with a BULLISH or BEARISH bias, the close of
  the bar the signal was made on (the last bar on or before its event day) against the close
  `horizon` trading bars later, from the bar store. BULLISH is a hit when the price rose,
  BEARISH when it fell; NEUTRAL biases are counted but never scored; a signal too recent to
  have its later bar is `pending`, not a miss (newest `MAX_SCORED` calls);
- dead letters by stage and reason: the rows still dead, the number the overview shows too
  (requeued rows are counted apart).
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Text, case, cast, func, literal_column, select

from signalgen.config.operations import OperationsConfig
from signalgen.marketdata.costs import budget_status, cost_by_period
from signalgen.ops.broker import DEFAULT_QUEUES, queue_depths
from signalgen.ops.dlq import reason_kind
from signalgen.storage import Database
from signalgen.storage.models import Bar, DeadLetter, Execution, Pipeline, SignalRecord

#: Most (signal, ticker) pairs scored per request; newest first.
MAX_SCORED = 20000
#: Most latencies read for percentiles (newest executions).
MAX_LATENCIES = 50000


@dataclass
class HitRate:
    generator: str
    horizon: int
    scored: int = 0
    hits: int = 0
    neutral: int = 0
    pending: int = 0
    no_bars: int = 0
    returns: list[float] = field(default_factory=list, repr=False)

    @property
    def rate(self) -> float | None:
        return round(self.hits / self.scored, 4) if self.scored else None

    def as_dict(self) -> dict[str, Any]:
        mean = sum(self.returns) / len(self.returns) if self.returns else None
        return {
            "generator": self.generator,
            "horizon_days": self.horizon,
            "scored": self.scored,
            "hits": self.hits,
            "hit_rate": self.rate,
            "neutral": self.neutral,
            "pending": self.pending,
            "no_bars": self.no_bars,
            "mean_directional_return": round(mean, 6) if mean is not None else None,
        }


def score(bias: str, entry: float, later: float) -> tuple[bool, float] | None:
    """(hit, directional return) of one call: BULLISH wants a rise, BEARISH a fall. None when
    the closes cannot score it (not positive, not finite: a bad bar, not a miss)."""
    if not (math.isfinite(entry) and math.isfinite(later)) or entry <= 0 or later <= 0:
        return None
    change = later / entry - 1.0
    if not math.isfinite(change):
        return None
    directional = change if bias == "BULLISH" else -change
    return directional > 0, directional


def days_before(day: date, days: int) -> date:
    """`day - days`, stopping at year 1 (a signal of 0001-01-01 is a value the schema admits)."""
    if day.toordinal() - days < 1:
        return date.min
    return day - timedelta(days=days)


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float as None: the page and /dashboard/data are strict
    JSON, and a NaN or an infinity stored by anyone (a float column admits them) must not
    turn the dashboard into a 500 for everyone."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


Series = tuple[list[date], list[float]]


def _bars(db: Database, tickers: set[str], start: date) -> dict[str, Series]:
    out: dict[str, Series] = {}
    if not tickers:
        return out
    with db.session() as session:
        rows = session.execute(
            select(Bar.ticker, Bar.day, Bar.close)
            .where(Bar.ticker.in_(sorted(tickers)), Bar.day >= start)
            .order_by(Bar.ticker, Bar.day)
        ).all()
    for ticker, day, close in rows:
        days, closes = out.setdefault(ticker, ([], []))
        days.append(day)
        closes.append(float(close))
    return out


def hit_rates(db: Database, *, horizon: int = 5, since: datetime | None = None) -> list[HitRate]:
    """Hit rate per generator over signals created since `since` (all when None)."""
    statement = (
        select(SignalRecord.source, SignalRecord.event_time, SignalRecord.payload)
        .order_by(SignalRecord.created_at.desc())
        .limit(MAX_SCORED)
    )
    if since is not None:
        statement = statement.where(SignalRecord.created_at >= since)
    with db.session() as session:
        rows = session.execute(statement).all()
    calls: list[tuple[str, date, str, str]] = []  # generator, event day, ticker, bias
    for source, event_time, payload in rows:
        try:
            biases = json.loads(payload).get("bias") or {}
        except (ValueError, AttributeError, RecursionError):
            continue
        if not isinstance(biases, dict) or event_time is None:
            continue
        for ticker, entry in biases.items():
            if isinstance(entry, dict) and isinstance(entry.get("bias"), str):
                calls.append((source, event_time.astimezone(UTC).date(), ticker, entry["bias"]))
    results: dict[str, HitRate] = {}
    if not calls:
        return []
    start = days_before(min(c[1] for c in calls), 10)
    bars = _bars(db, {c[2] for c in calls}, start)
    for generator, day, ticker, bias in calls:
        item = results.setdefault(generator, HitRate(generator, horizon))
        if bias not in ("BULLISH", "BEARISH"):
            item.neutral += 1
            continue
        series = bars.get(ticker)
        if series is None:
            item.no_bars += 1
            continue
        days, closes = series
        at = bisect.bisect_right(days, day) - 1  # the bar the signal was made on
        if at < 0:
            item.no_bars += 1
            continue
        if at + horizon >= len(days):
            item.pending += 1
            continue
        scored = score(bias, closes[at], closes[at + horizon])
        if scored is None:
            item.no_bars += 1
            continue
        hit, directional = scored
        item.scored += 1
        item.hits += int(hit)
        item.returns.append(directional)
    return [results[name] for name in sorted(results)]


#: Hour buckets up to this window (7 days: 168 bars); day buckets beyond.
HOURLY_DAYS = 7
#: Dense series (a bar for every bucket, zeros included) up to this many buckets.
MAX_DENSE_BUCKETS = 400
#: Rows of the failures-per-pipeline table.
MAX_FAILING_PIPELINES = 20
#: Latency percentiles drawn per bucket.
LATENCY_QUANTILES = (50, 90, 99)
#: A latency outside this range is not a latency (the column admits NaN and infinities).
FINITE = 1e300


@dataclass(frozen=True)
class Window:
    """The time window every aggregate reads: [since, until), cut into UTC buckets."""

    since: datetime
    until: datetime
    unit: str  # "hour" | "day"

    @classmethod
    def last(cls, days: int, now: datetime) -> Window:
        unit = "hour" if days <= HOURLY_DAYS else "day"
        until = bucket_start(now, unit) + (
            timedelta(hours=1) if unit == "hour" else timedelta(days=1)
        )
        span = timedelta(days=days)
        since = until - span if until - datetime.min.replace(tzinfo=UTC) > span else None
        return cls(since or datetime.min.replace(tzinfo=UTC), until, unit)

    def key(self, moment: datetime) -> str:
        return bucket_key(moment, self.unit)

    def keys(self, seen: set[str]) -> list[str]:
        """Every bucket of the window when few enough (a quiet hour is a zero, not a gap),
        else the buckets that hold data."""
        step = timedelta(hours=1) if self.unit == "hour" else timedelta(days=1)
        start = bucket_start(self.since, self.unit)
        if (self.until - start) / step <= MAX_DENSE_BUCKETS:
            out, at = [], start
            while at < self.until:
                out.append(self.key(at))
                at += step
            return out
        return sorted(seen)


def bucket_start(moment: datetime, unit: str) -> datetime:
    moment = moment.astimezone(UTC)
    if unit == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def bucket_key(moment: datetime, unit: str) -> str:
    """`2026-03-02T14:00Z` (hour) or `2026-03-02` (day), for any year 1..9999."""
    start = bucket_start(moment, unit)
    day = f"{start.year:04d}-{start.month:02d}-{start.day:02d}"
    return f"{day}T{start.hour:02d}:00Z" if unit == "hour" else day


def _bucket_sql(db: Database, column: Any, unit: str) -> Any:
    """The SQL of a time column's UTC bucket: `date_trunc` on PostgreSQL; on SQLite the stored
    UTC text's prefix (`YYYY-MM-DD HH` / `YYYY-MM-DD`)."""
    if unit not in ("hour", "day"):
        raise ValueError(f"bucket unit {unit!r} is not 'hour' or 'day'")
    # Literals, not bound parameters: the GROUP BY must repeat the SELECT's expression exactly.
    if db.dialect == "postgresql":
        return func.date_trunc(literal_column(f"'{unit}'"), func.timezone("UTC", column))
    return func.substr(
        column, literal_column("1"), literal_column("13" if unit == "hour" else "10")
    )


def _bucket_value(value: Any, unit: str) -> str | None:
    """A bucket as read back from either database, as a `bucket_key`."""
    if isinstance(value, datetime):
        return bucket_key(value.replace(tzinfo=UTC) if value.tzinfo is None else value, unit)
    if isinstance(value, str) and len(value) >= (13 if unit == "hour" else 10):
        return f"{value[:10]}T{value[11:13]}:00Z" if unit == "hour" else value[:10]
    return None


def _series(keys: list[str], counts: dict[str, dict[str, int]]) -> dict[str, list[int]]:
    return {name: [counts[name].get(k, 0) for k in keys] for name in sorted(counts)}


def signals_over_time(
    db: Database, *, since: datetime, top_tickers: int = 8, window: Window | None = None
) -> dict[str, Any]:
    """Signals per bucket of the window: {"days": [bucket keys], "by_type": {type: [n]},
    "by_ticker": {ticker: [n]} (the busiest), "by_generator": {source: {count, last}},
    "total"}. One grouped query over `signals.created_at`'s index."""
    window = window or Window(since, datetime.max.replace(tzinfo=UTC), "day")
    bucket = _bucket_sql(db, SignalRecord.created_at, window.unit)
    statement = (
        select(
            bucket,
            SignalRecord.source,
            SignalRecord.signal_type,
            cast(SignalRecord.tickers, Text),
            func.count(),
            func.max(SignalRecord.created_at),
        )
        .where(SignalRecord.created_at >= window.since, SignalRecord.created_at < window.until)
        .group_by(
            bucket, SignalRecord.source, SignalRecord.signal_type, cast(SignalRecord.tickers, Text)
        )
    )
    with db.session() as session:
        rows = session.execute(statement).all()
    by_type: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_ticker: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    generators: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    total = 0
    for raw_bucket, source, kind, tickers_text, count, last in rows:
        key = _bucket_value(raw_bucket, window.unit)
        if key is None:
            continue
        count = int(count)
        seen.add(key)
        total += count
        by_type[kind][key] += count
        try:
            tickers = json.loads(tickers_text or "[]")
        except (ValueError, RecursionError):
            tickers = []
        for ticker in tickers if isinstance(tickers, list) else ():
            if isinstance(ticker, str):
                by_ticker[ticker][key] += count
        item = generators.setdefault(source, {"count": 0, "last": None})
        item["count"] += count
        if isinstance(last, str):  # SQLite's max() of the stored text
            last = datetime.fromisoformat(last).replace(tzinfo=UTC)
        if last is not None and (item["last"] is None or last > item["last"]):
            item["last"] = last
    keys = window.keys(seen)
    top = sorted(by_ticker, key=lambda t: (-sum(by_ticker[t].values()), t))[:top_tickers]
    return {
        "days": keys,
        "unit": window.unit,
        "by_type": _series(keys, by_type),
        "by_ticker": {t: [by_ticker[t].get(k, 0) for k in keys] for t in top},
        "by_generator": {
            name: {"count": v["count"], "last": v["last"].isoformat() if v["last"] else None}
            for name, v in sorted(generators.items())
        },
        "total": total,
    }


def executions_by_status(db: Database, since: datetime | None = None) -> dict[str, int]:
    """Executions by status, claimed since `since` (all when None)."""
    statement = select(Execution.status, func.count()).group_by(Execution.status)
    if since is not None:
        statement = statement.where(Execution.claimed_at >= since)
    with db.session() as session:
        return {
            status: int(count)
            for status, count in session.execute(statement.order_by(Execution.status))
        }


def executions_over_time(db: Database, window: Window) -> dict[str, Any]:
    """Executions per bucket by status, and publish → execution latency percentiles per
    bucket (PostgreSQL's `percentile_cont`; on SQLite the window's newest latencies)."""
    bucket = _bucket_sql(db, Execution.claimed_at, window.unit)
    in_window = (Execution.claimed_at >= window.since, Execution.claimed_at < window.until)
    finite = Execution.latency_seconds.between(-FINITE, FINITE)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    latency: dict[str, dict[str, float | None]] = {}
    seen: set[str] = set()
    with db.session() as session:
        for raw, status, count in session.execute(
            select(bucket, Execution.status, func.count())
            .where(*in_window)
            .group_by(bucket, Execution.status)
        ):
            key = _bucket_value(raw, window.unit)
            if key is not None:
                seen.add(key)
                counts[status][key] += int(count)
        if db.dialect == "postgresql":
            quantiles = [
                func.percentile_cont(q / 100.0).within_group(Execution.latency_seconds)
                for q in LATENCY_QUANTILES
            ]
            for raw, *values in session.execute(
                select(bucket, *quantiles).where(*in_window, finite).group_by(bucket)
            ):
                key = _bucket_value(raw, window.unit)
                if key is not None:
                    latency[key] = {
                        f"p{q}": float(v) for q, v in zip(LATENCY_QUANTILES, values, strict=True)
                    }
        else:
            samples: dict[str, list[float]] = defaultdict(list)
            for moment, value in session.execute(
                select(Execution.claimed_at, Execution.latency_seconds)
                .where(*in_window, finite)
                .order_by(Execution.claimed_at.desc())
                .limit(MAX_LATENCIES)
            ):
                if value is not None and math.isfinite(value):
                    samples[window.key(moment)].append(float(value))
            for key, values in samples.items():
                latency[key] = {f"p{q}": percentile(values, q) for q in LATENCY_QUANTILES}
    keys = window.keys(seen | set(latency))
    return {
        "buckets": keys,
        "by_status": _series(keys, counts),
        "latency": {
            f"p{q}": [
                None if latency.get(k, {}).get(f"p{q}") is None else round(latency[k][f"p{q}"], 4)  # type: ignore[arg-type]
                for k in keys
            ]
            for q in LATENCY_QUANTILES
        },
    }


def failures_per_pipeline(db: Database, since: datetime) -> list[dict[str, Any]]:
    """Pipelines with failed executions claimed since `since`, most failures first: owner,
    name, failed, of how many executions, the newest error."""
    failed = func.sum(case((Execution.status == "failed", 1), else_=0))
    with db.session() as session:
        rows = session.execute(
            select(Execution.pipeline_id, failed, func.count())
            .where(Execution.claimed_at >= since)
            .group_by(Execution.pipeline_id)
            .having(failed > 0)
            .order_by(failed.desc(), Execution.pipeline_id)
            .limit(MAX_FAILING_PIPELINES)
        ).all()
        out = []
        for pipeline_id, n_failed, n_total in rows:
            pipeline = session.get(Pipeline, pipeline_id)
            error = session.execute(
                select(Execution.error)
                .where(
                    Execution.pipeline_id == pipeline_id,
                    Execution.claimed_at >= since,
                    Execution.status == "failed",
                )
                .order_by(Execution.claimed_at.desc())
                .limit(1)
            ).scalar()
            out.append(
                {
                    "pipeline_id": str(pipeline_id),
                    "owner": pipeline.owner if pipeline else None,
                    "name": pipeline.name if pipeline else None,
                    "failed": int(n_failed),
                    "executions": int(n_total),
                    "last_error": (error or "")[:200],
                }
            )
    return out


def latency_percentiles(db: Database) -> dict[str, Any]:
    with db.session() as session:
        read = [
            float(v or 0.0)
            for v in session.execute(
                select(Execution.latency_seconds)
                .where(Execution.latency_seconds.is_not(None))
                .order_by(Execution.id.desc())
                .limit(MAX_LATENCIES)
            ).scalars()
        ]
    values = [v for v in read if math.isfinite(v)]  # a float column admits NaN and infinity
    out: dict[str, Any] = {"count": len(values)}
    for q in (50, 90, 95, 99):
        value = percentile(values, q)
        out[f"p{q}"] = round(value, 4) if value is not None else None
    out["max"] = round(max(values), 4) if values else None
    return out


def dead_letter_summary(db: Database) -> dict[str, Any]:
    """Dead letters still dead, by stage and reason kind (what the overview counts too), and
    how many were requeued or otherwise left the dead state."""
    with db.session() as session:
        rows = session.execute(
            select(DeadLetter.stage, DeadLetter.status, DeadLetter.reason, func.count()).group_by(
                DeadLetter.stage, DeadLetter.status, DeadLetter.reason
            )
        ).all()
    by_reason: dict[str, int] = defaultdict(int)
    by_stage: dict[str, int] = defaultdict(int)
    by_status: dict[str, int] = defaultdict(int)
    for stage, status, reason, count in rows:
        by_status[status] += int(count)
        if status == "dead":
            by_stage[stage] += int(count)
            by_reason[reason_kind(reason)] += int(count)
    return {
        "total": sum(by_status.values()),
        "dead": by_status.get("dead", 0),
        "by_status": dict(sorted(by_status.items())),
        "by_stage": dict(sorted(by_stage.items())),
        "by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def outbox_backlog(db: Database, now: datetime) -> dict[str, Any]:
    """Recorded signals the broker has not taken yet (the partial index `ix_signals_outbox`)."""
    with db.session() as session:
        count, oldest = session.execute(
            select(func.count(), func.min(SignalRecord.recorded_at)).where(
                SignalRecord.published_at.is_(None)
            )
        ).one()
    age = None
    if oldest is not None:
        age = max(0.0, (now - oldest.astimezone(UTC)).total_seconds())
    return {"count": int(count or 0), "oldest_age_seconds": age}


def cost_over_time(db: Database, config: OperationsConfig, window: Window) -> dict[str, Any]:
    """Estimated provider cost per generator per bucket (provider_calls' hour column)."""
    rows = cost_by_period(db, config, period=window.unit, since=window.since, until=window.until)  # type: ignore[arg-type]
    per: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    seen: set[str] = set()
    for row in rows:
        key = window.key(row.period_start)
        seen.add(key)
        per[row.generator][key] += row.cost
    keys = window.keys(seen)
    return {
        "buckets": keys,
        "by_generator": {g: [round(per[g].get(k, 0.0), 6) for k in keys] for g in sorted(per)},
    }


@dataclass(frozen=True)
class LiveSources:
    """What the dashboard reads besides the database; each is optional and each failure is
    shown on the page (`error`) without hiding the rest."""

    broker_url: str | None = None
    queues: Sequence[str] = DEFAULT_QUEUES
    redis_client: Any | None = None
    #: Configured generators by name (`signalgen.config.load_generators`), or the reason they
    #: could not be loaded.
    generators: Mapping[str, Any] | None = None
    generators_error: str | None = None


def _guarded(read: Callable[[], Any]) -> dict[str, Any]:
    try:
        return {"values": read(), "error": None}
    except Exception as exc:
        return {"values": None, "error": f"{type(exc).__name__}: {exc}"[:300]}


def generator_health(
    db: Database,
    config: OperationsConfig,
    live: LiveSources,
    by_generator: Mapping[str, Mapping[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    """One row per generator (configured, or seen in the window's signals): schedule, last
    run, last signal, new signals in the window, state."""
    from signalgen.ops.health import generator_state, parse_time, read_records

    specs = dict(live.generators or {})
    names = sorted(set(specs) | set(by_generator))
    records: dict[str, dict[str, str]] = {}
    records_error = None
    if live.redis_client is not None and names:
        try:
            records = read_records(live.redis_client, names)
        except Exception as exc:
            records_error = f"{type(exc).__name__}: {exc}"[:300]
    budgets = {b.generator: b for b in budget_status(db, config, generators=names, now=now)}
    rows = []
    for name in names:
        spec = specs.get(name)
        record = records.get(name, {})
        seen = by_generator.get(name, {})
        interval = int(spec.interval_seconds) if spec is not None else 0
        budget = budgets.get(name)
        paused = budget.paused if budget is not None else None
        budget_text = ""
        if budget is not None and paused is not None:
            used, limit = (
                (budget.calls_this_hour, budget.hour_limit)
                if paused == "hour"
                else (budget.calls_today, budget.day_limit)
            )
            budget_text = f" ({used} of {limit} calls)"
        last_signal = seen.get("last") or record.get("last_signal_at") or None
        if spec is None:
            state = {"kind": "not_configured", "text": "not configured (signals only)"}
        elif not spec.entry.enabled:
            state = {"kind": "disabled", "text": "disabled"}
        elif records_error is not None:
            state = {"kind": "unknown", "text": f"unknown: Redis unreadable ({records_error})"}
        else:
            found = generator_state(
                record,
                interval_seconds=interval,
                now=now,
                budget_paused=paused,
                budget_text=budget_text,
            )
            state = {"kind": found.kind, "text": found.text}
        last_run = parse_time(record.get("last_run_at"))
        rows.append(
            {
                "generator": name,
                "schedule": f"every {interval} s" if spec is not None else None,
                "last_run": last_run.isoformat() if last_run else None,
                "last_signal": last_signal,
                "signals": int(seen.get("count", 0)),
                "state": state["kind"],
                "state_text": state["text"],
            }
        )
    return {"rows": rows, "error": live.generators_error or records_error}


def dashboard_data(
    db: Database,
    config: OperationsConfig,
    *,
    days: int = HOURLY_DAYS,
    horizon: int = 5,
    now: datetime | None = None,
    live: LiveSources | None = None,
) -> dict[str, Any]:
    """Everything the dashboard page shows, JSON-ready."""
    now = now or datetime.now(UTC)
    live = live or LiveSources()
    window = Window.last(days, now)
    signals = signals_over_time(db, since=window.since, window=window)
    broker_url = live.broker_url
    queues = (
        _guarded(lambda: queue_depths(broker_url, live.queues))
        if broker_url is not None
        else {"values": None, "error": "no broker configured"}
    )
    cost = cost_by_period(db, config, period="day", since=window.since, until=window.until)
    data: dict[str, Any] = finite_json(
        {
            "generated_at": now.isoformat(),
            "days": days,
            "window": {
                "since": window.since.isoformat(),
                "until": window.until.isoformat(),
                "unit": window.unit,
            },
            "signals": signals,
            "health": generator_health(db, config, live, signals["by_generator"], now),
            "queues": queues,
            "outbox": outbox_backlog(db, now),
            "hit_rates": [h.as_dict() for h in hit_rates(db, horizon=horizon)],
            "executions": executions_by_status(db, window.since),
            "executions_over_time": executions_over_time(db, window),
            "failures": failures_per_pipeline(db, window.since),
            "latency": latency_percentiles(db),
            "dead_letters": dead_letter_summary(db),
            "currency": config.currency,
            "cost": [
                dict(asdict(row), period_start=row.period_start.date().isoformat()) for row in cost
            ],
            "cost_over_time": cost_over_time(db, config, window),
        }
    )
    return data
