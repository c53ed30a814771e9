"""Data of the signal analytics dashboard: plain queries and pure arithmetic, JSON-ready.

- signals over time by type and by ticker (per UTC day);
- hit rate per generator: for each (signal, ticker) with a BULLISH or BEARISH bias, the close of
  the bar the signal was made on (the last bar on or before its event day) against the close
  `horizon` trading bars later, from the bar store. BULLISH is a hit when the price rose,
  BEARISH when it fell; NEUTRAL biases are counted but never scored; a signal too recent to
  have its later bar is `pending`, not a miss;
- executions by status; publish → execution latency percentiles;
- dead letters by stage and reason; provider calls and estimated cost per generator and day.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from signalgen.db import Database
from signalgen.db.models import Bar, DeadLetter, Execution, SignalRecord
from signalgen.ops.config import OperationsConfig
from signalgen.ops.costs import cost_by_period
from signalgen.ops.dlq import reason_kind

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


def signals_over_time(db: Database, *, since: datetime, top_tickers: int = 8) -> dict[str, Any]:
    """Counts per UTC day: {"days": [...], "by_type": {type: [n per day]}, "by_ticker": ...}."""
    with db.session() as session:
        rows = session.execute(
            select(SignalRecord.created_at, SignalRecord.signal_type, SignalRecord.tickers).where(
                SignalRecord.created_at >= since
            )
        ).all()
    by_type: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_ticker: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    days: set[str] = set()
    for created_at, kind, tickers in rows:
        day = created_at.astimezone(UTC).date().isoformat()
        days.add(day)
        by_type[kind][day] += 1
        for ticker in tickers or ():
            by_ticker[ticker][day] += 1
    ordered = sorted(days)
    top = sorted(by_ticker, key=lambda t: (-sum(by_ticker[t].values()), t))[:top_tickers]
    return {
        "days": ordered,
        "by_type": {k: [by_type[k].get(d, 0) for d in ordered] for k in sorted(by_type)},
        "by_ticker": {t: [by_ticker[t].get(d, 0) for d in ordered] for t in top},
        "total": len(rows),
    }


def executions_by_status(db: Database) -> dict[str, int]:
    with db.session() as session:
        return {
            status: int(count)
            for status, count in session.execute(
                select(Execution.status, func.count())
                .group_by(Execution.status)
                .order_by(Execution.status)
            )
        }


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
    with db.session() as session:
        rows = session.execute(select(DeadLetter.stage, DeadLetter.status, DeadLetter.reason)).all()
    by_reason: dict[str, int] = defaultdict(int)
    by_stage: dict[str, int] = defaultdict(int)
    dead = 0
    for stage, status, reason in rows:
        by_stage[stage] += 1
        by_reason[reason_kind(reason)] += 1
        dead += status == "dead"
    return {
        "total": len(rows),
        "dead": dead,
        "by_stage": dict(sorted(by_stage.items())),
        "by_reason": dict(sorted(by_reason.items(), key=lambda kv: -kv[1])),
    }


def dashboard_data(
    db: Database,
    config: OperationsConfig,
    *,
    days: int = 30,
    horizon: int = 5,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything the dashboard page shows, JSON-ready."""
    now = now or datetime.now(UTC)
    since = now - timedelta(days=days)
    cost = cost_by_period(db, config, period="day", since=since)
    data: dict[str, Any] = finite_json(
        {
            "generated_at": now.isoformat(),
            "days": days,
            "signals": signals_over_time(db, since=since),
            "hit_rates": [h.as_dict() for h in hit_rates(db, horizon=horizon)],
            "executions": executions_by_status(db),
            "latency": latency_percentiles(db),
            "dead_letters": dead_letter_summary(db),
            "currency": config.currency,
            "cost": [
                dict(asdict(row), period_start=row.period_start.date().isoformat()) for row in cost
            ],
        }
    )
    return data
