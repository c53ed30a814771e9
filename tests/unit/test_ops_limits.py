"""Budgets per generator and execution limits per owner (Lua scripts on fakeredis[lua])."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from sqlalchemy import select

from signalgen.config.operations import (
    Budget,
    Budgets,
    OperationsConfig,
    OwnerLimit,
    RateLimits,
    load_operations_config,
)
from signalgen.marketdata.costs import (
    BudgetExhausted,
    BudgetGuard,
    budget_status,
    cost_by_period,
)
from signalgen.marketdata.finnhub import FinnhubSource
from signalgen.marketdata.limiter import Limit, memory_rate_limiter
from signalgen.marketdata.refresh import refresh_bars
from signalgen.marketdata.store import BarStore
from signalgen.marketdata.usage import record_call
from signalgen.ops.ratelimit import DEFERRED_COUNTER, LIMITED_COUNTER, check_execution
from signalgen.storage import Database
from signalgen.storage.models import Execution
from tests.support.ops import T0, add_execution, add_pipeline, make_signal, record

NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def config(**budgets: Budget) -> OperationsConfig:
    return OperationsConfig(cost_per_call={"finnhub": 0.01}, budgets=Budgets(generators=budgets))


def test_budget_pauses_after_the_hourly_limit_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = BudgetGuard(
        fakeredis.FakeRedis(), config(gc=Budget(calls_per_hour=3)), clock=lambda: NOW
    )
    for _ in range(3):
        guard.reserve("gc", "quote")
    with caplog.at_level(logging.DEBUG, "signalgen.marketdata.costs"):
        for _ in range(2):
            with pytest.raises(BudgetExhausted, match="3 of 3 calls this hour") as info:
                guard.reserve("gc", "quote")
    assert info.value.period == "hour"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    guard.reserve("other", "quote")  # no budget for other generators
    later = BudgetGuard(guard.client, guard.config, clock=lambda: NOW + timedelta(hours=1))
    later.reserve("gc", "quote")  # a new hour, a new budget


def test_cost_budget_becomes_a_daily_call_limit_seeded_from_the_database(
    sqlite_db: Database,
) -> None:
    cfg = config(gc=Budget(cost_per_day=0.05))  # 0.05 / 0.01 per call = 5 calls a day
    record_call(
        sqlite_db,
        provider="finnhub",
        generator="gc",
        endpoint="quote",
        calls=4,
        at=NOW - timedelta(hours=3),
    )
    guard = BudgetGuard(fakeredis.FakeRedis(), cfg, database=sqlite_db, clock=lambda: NOW)
    guard.reserve("gc")  # the 5th call of the day
    with pytest.raises(BudgetExhausted, match="5 of 5 calls this day"):
        guard.reserve("gc")


def test_exhausted_budget_pauses_finnhub_calls_without_raising(
    sqlite_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    guard = BudgetGuard(
        fakeredis.FakeRedis(), config(gc=Budget(calls_per_day=0)), clock=lambda: NOW
    )
    # No server at this address: an HTTP request would fail differently from the budget.
    source = FinnhubSource(
        "k" * 20,
        limiter=memory_rate_limiter([Limit(100, 1.0)]),
        base_url="http://127.0.0.1:9",
        budget=guard,
    )
    with caplog.at_level(logging.WARNING):
        report = refresh_bars(BarStore(sqlite_db), source, ["AAPL"], 10, "gc", now=NOW)
    assert report.failures == 2
    assert all("budget of generator 'gc' exhausted" in e for e in report.tickers["AAPL"].errors)
    assert any(getattr(r, "event", "") == "generator_budget_exhausted" for r in caplog.records)


def test_cost_per_period_and_budget_status(sqlite_db: Database) -> None:
    cfg = config(gc=Budget(calls_per_hour=10, calls_per_day=12))
    for hour, calls in ((9, 3), (13, 4), (14, 8)):
        record_call(
            sqlite_db,
            provider="finnhub",
            generator="gc",
            endpoint="quote",
            calls=calls,
            at=NOW.replace(hour=hour),
        )
    record_call(
        sqlite_db,
        provider="finnhub",
        generator="gc",
        endpoint="quote",
        error=True,
        at=NOW - timedelta(days=1),
    )
    daily = cost_by_period(sqlite_db, cfg, period="day")
    assert [(r.period_start.day, r.calls, r.errors, r.cost) for r in daily] == [
        (1, 1, 1, 0.01),
        (2, 15, 0, 0.15),
    ]
    hourly = cost_by_period(sqlite_db, cfg, period="hour", since=NOW.replace(hour=0))
    assert [(r.period_start.hour, r.calls) for r in hourly] == [(9, 3), (13, 4), (14, 8)]
    (status,) = budget_status(sqlite_db, cfg, generators=["gc"], now=NOW)
    assert (status.calls_this_hour, status.calls_today, status.paused) == (8, 15, "day")


def test_operations_config_errors_name_file_and_field(tmp_path: object) -> None:
    from pathlib import Path

    from signalgen.config import ConfigError

    path = Path(str(tmp_path)) / "operations.json"
    path.write_text('{"rate_limits": {"on_limit": "drop"}}')
    with pytest.raises(ConfigError, match=r"operations.json: rate_limits.on_limit"):
        load_operations_config(path)
    assert load_operations_config(path.with_name("missing.json")) == OperationsConfig()


# -- per-owner execution limits ------------------------------------------------------------------


def _executions(db: Database, owner: str, n: int) -> list[int]:
    signals = [make_signal("AAPL", i) for i in range(n)]
    record(db, signals)
    pipeline = add_pipeline(db, owner=owner)
    return [add_execution(db, pipeline, s, status="enqueued") for s in signals]


def test_owner_over_the_limit_is_deferred_then_recorded(sqlite_db: Database) -> None:
    client = fakeredis.FakeRedis()
    limits = RateLimits(
        on_limit="defer",
        max_defer_seconds=600,
        default=None,
        owners={"alice": OwnerLimit(executions=3, window_seconds=60)},
    )
    ids = _executions(sqlite_db, "alice", 5)
    verdicts = [check_execution(sqlite_db, client, limits, i, now=T0) for i in ids]
    assert [v.action for v in verdicts] == ["run"] * 3 + ["defer"] * 2
    assert all(0 < v.countdown <= 63 for v in verdicts[3:])
    assert int(client.hget(DEFERRED_COUNTER, "alice")) == 2
    # Deferred past max_defer_seconds: recorded rate_limited, never dropped.
    late = check_execution(sqlite_db, client, limits, ids[4], now=T0 + timedelta(seconds=590))
    assert late.action == "record"
    with sqlite_db.session() as session:
        status, error = session.execute(
            select(Execution.status, Execution.error).where(Execution.id == ids[4])
        ).one()
    assert status == "rate_limited" and "alice" in error
    assert int(client.hget(LIMITED_COUNTER, "alice")) == 1


def test_record_mode_and_unlimited_owners(sqlite_db: Database) -> None:
    client = fakeredis.FakeRedis()
    limits = RateLimits(
        on_limit="record", default=None, owners={"bob": OwnerLimit(executions=2, window_seconds=60)}
    )
    bob = _executions(sqlite_db, "bob", 4)
    assert [check_execution(sqlite_db, client, limits, i).action for i in bob] == [
        "run",
        "run",
        "record",
        "record",
    ]
    carol = add_pipeline(sqlite_db, owner="carol")
    signal = make_signal("AAPL", 99)
    record(sqlite_db, [signal])
    free = add_execution(sqlite_db, carol, signal, status="enqueued")
    assert check_execution(sqlite_db, client, limits, free).action == "run"
    # A finished row takes no slot: the dispatcher answers "duplicate" for it.
    from sqlalchemy import update

    with sqlite_db.session() as session:
        session.execute(update(Execution).where(Execution.id == bob[0]).values(status="succeeded"))
    assert check_execution(sqlite_db, client, limits, bob[0]).action == "run"


def test_no_limits_configured_costs_nothing(sqlite_db: Database) -> None:
    # No owners and no default: no query and no Redis call (client None would raise).
    assert check_execution(sqlite_db, None, RateLimits(), 12345).action == "run"
    assert (
        not RateLimits().enabled
        and RateLimits(owners={"x": OwnerLimit(executions=1, window_seconds=1)}).enabled
    )
