"""Acceptance: a free-plan account backfills history and the golden cross fires.

Real PostgreSQL and Redis; a local server answering as Finnhub's free plan does (`/quote`
works, `/stock/candle` is 403) and one answering as Stooq's CSV download. Six tickers' real
history is cut to end on one of its golden crosses and re-dated onto the exchange's last
sessions. Every request is counted by the servers themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from bench.fakes.fake_finnhub import FakeFinnhub
from bench.fakes.fake_history import FakeHistory
from generators.base import Tick
from signalgen.marketdata.calendar import MarketCalendar, market_calendar
from signalgen.marketdata.csv_import import read_bars_csv
from signalgen.marketdata.store import BarRow, BarStore
from signalgen.settings import get_settings
from signalgen.storage import Database
from signalgen.storage.models import SignalRecord
from tests.support.market import MARKET_DIR, reference_crosses
from tests.support.processes import CeleryProcess, service_env, start_worker
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

TOKEN = "free-plan-4e2a"
FILES = {
    "AAPL": "aapl_2004_2018.csv",
    "INTC": "intc_1995_2004.csv",
    "NVDA": "nvda_1999_2014.csv",
    "ORCL": "orcl_1995_2014.csv",
    "SPY": "spy_2008_2017.csv",
    "YHOO": "yhoo_1996_2014.csv",
}
TICKERS = list(FILES)
#: Bars served per ticker (the golden cross needs 205: SMA 200 on the bar before 5 checked).
SERVED = 260
GENERATOR = "golden_cross_generator"


def crossing_history(name: str, sessions: list[date]) -> list[BarRow]:
    """The file's last SERVED bars up to its latest golden cross (50/200), re-dated so the
    cross is on the last of `sessions`."""
    rows = read_bars_csv(MARKET_DIR / name).rows
    crosses = [t for t in reference_crosses([r.close for r in rows], 50, 200) if t >= SERVED]
    t = crosses[-1]
    chunk = rows[t - SERVED + 1 : t + 1]
    return [
        BarRow(day, r.open, r.high, r.low, r.close, r.volume)
        for day, r in zip(sessions[-SERVED:], chunk, strict=True)
    ]


def last_trade(calendar: MarketCalendar, moment: datetime) -> datetime:
    if calendar.is_open(moment):
        return moment
    return calendar.last_closed_session(moment).close - timedelta(seconds=1)


@pytest.fixture(scope="module")
def xnys() -> MarketCalendar:
    return market_calendar("XNYS")


@pytest.fixture
def servers(xnys: MarketCalendar) -> Iterator[tuple[FakeFinnhub, FakeHistory]]:
    now = datetime.now(UTC)
    end = xnys.last_closed_session(now).day
    sessions = xnys.sessions_between(end - timedelta(days=SERVED * 2), end)
    trade = last_trade(xnys, now)
    with FakeFinnhub(token=TOKEN) as finnhub, FakeHistory() as history:
        finnhub.set_mode("/stock/candle", "403")  # the free plan
        for ticker, name in FILES.items():
            rows = crossing_history(name, sessions)
            history.bars[ticker] = rows
            last = rows[-1]
            finnhub.quotes[ticker] = {
                "c": last.close,
                "h": last.high,
                "l": last.low,
                "o": last.open,
                "pc": rows[-2].close,
                "t": int(trade.timestamp()),
            }
        yield finnhub, history


@pytest.fixture
def environment(
    tmp_path: Path,
    pg_db: Database,
    redis_url: str,
    redis_client: Any,
    servers: tuple[FakeFinnhub, FakeHistory],
) -> dict[str, str]:
    finnhub, history = servers
    (tmp_path / "generators.json").write_text(
        json.dumps({"generators": {GENERATOR: {"type": "golden_cross", "interval_seconds": 300}}})
    )
    (tmp_path / "watchlist.json").write_text(json.dumps({"tickers": TICKERS}))
    return {
        "DATABASE_URL": pg_db.url,
        "BROKER_URL": redis_url,
        "REDIS_URL": redis_url,
        "GENERATORS_CONFIG_PATH": str(tmp_path / "generators.json"),
        "WATCHLIST_CONFIG_PATH": str(tmp_path / "watchlist.json"),
        "FINNHUB_API_KEY": TOKEN,
        "FINNHUB_BASE_URL": finnhub.base_url,
        "HISTORY_SOURCE": "stooq",
        "STOOQ_BASE_URL": history.base_url,
        "MARKET_CALENDAR": "XNYS",
        "LOG_FORMAT": "json",
    }


def golden_crosses(database: Database) -> list[str]:
    with database.session() as session:
        records = session.scalars(
            select(SignalRecord).where(SignalRecord.signal_type == "golden_cross")
        ).all()
    return sorted(ticker for record in records for ticker in record.tickers)


def test_a_free_plan_backfills_six_tickers_and_the_golden_cross_fires_on_the_first_check(
    environment: dict[str, str],
    servers: tuple[FakeFinnhub, FakeHistory],
    pg_db: Database,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from signalgen.bus import KombuPublisher
    from signalgen.config import enabled_generators
    from signalgen.interfaces.cli import main
    from signalgen.marketdata import source_from_settings
    from signalgen.runtime import build_resources, run_generator

    finnhub, history = servers
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        backfilled = runner.invoke(main, ["bars", "backfill", "--tickers", ",".join(TICKERS)])
        assert backfilled.exit_code == 0, backfilled.output
        assert "backfilling from stooq" in backfilled.stderr  # the progress bar
        assert backfilled.stdout.strip() == (
            "backfill: 6 tickers from stooq, 1230 bars written, 6 requests, 6 filled"
        )
        assert history.per_ticker("stooq") == dict.fromkeys(TICKERS, 1)

        settings = get_settings()
        specs = enabled_generators(settings)
        source = source_from_settings(settings, pg_db)
        resources = build_resources(
            settings,
            specs=specs,
            database=pg_db,
            publisher=KombuPublisher(redis_url),
            market_source=source,
        )
        try:
            first = run_generator(
                specs[GENERATOR], Tick.for_slot(datetime.now(UTC), 300), resources
            )
            assert first.failed is None
            assert (first.bars, first.needed) == (205, 205)
            assert first.new == 6, first
            assert golden_crosses(pg_db) == sorted(TICKERS)
            quotes_after_first = finnhub.count("/quote")
            assert quotes_after_first <= len(TICKERS)  # at most one quote per ticker per check

            # Idempotent: a second backfill and a second check ask no provider for history.
            again = runner.invoke(main, ["bars", "backfill", "--tickers", ",".join(TICKERS)])
            assert again.exit_code == 0, again.output
            assert again.stdout.strip() == (
                "backfill: 6 tickers from stooq, 0 bars written, 0 requests, 6 complete"
            )
            second = run_generator(
                specs[GENERATOR],
                Tick.for_slot(datetime.now(UTC) + timedelta(minutes=5), 300),
                resources,
            )
            assert second.new == 0  # the same crosses: the same signal ids
            assert finnhub.count("/quote") - quotes_after_first <= len(TICKERS)
        finally:
            resources.close()
            source.close()
        assert history.count("stooq") == 6  # history never refetched once complete
        assert finnhub.count("/stock/candle") == 0  # history was complete: candles never asked
    finally:
        get_settings.cache_clear()


def send_generate(redis_url: str) -> None:
    """As beat does: by celeryconfig's own routes."""
    from celery import Celery

    import celeryconfig

    app = Celery("backfill-test", broker=redis_url, set_as_current=False)
    app.conf.update(task_routes=celeryconfig.task_routes, task_serializer="json")
    with app.connection_for_write() as connection:
        # Declared as a worker would have: on a fresh Redis a message to an undeclared queue
        # has no binding and would be dropped.
        for queue in celeryconfig.task_queues:
            queue(connection.default_channel).declare()
        app.send_task("signals.generate", args=[GENERATOR], connection=connection)


def worker_env(environment: dict[str, str]) -> dict[str, str]:
    env = service_env(**environment)
    for name in ("MOCK_GENERATOR_INTERVAL_SECONDS", "GOLDEN_CROSS_CHECK_INTERVAL_SECONDS"):
        env.pop(name, None)
    return env


def events(log: str, event: str) -> list[dict[str, Any]]:
    """The log's `event` lines, in time order (`log` may join several workers' logs)."""
    found = [json.loads(line) for line in log.splitlines() if f'"event": "{event}"' in line]
    return sorted(found, key=lambda e: str(e["ts"]))


@pytest.fixture
def workers(environment: dict[str, str], tmp_path: Path) -> Iterator[list[CeleryProcess]]:
    """Two generation workers (as several machines would run), started at once."""
    env = worker_env(environment)
    started = [
        start_worker(
            env, tmp_path / f"generation-{n}.log", name=f"gen{n}", queues="generate", wait=False
        )
        for n in (1, 2)
    ]
    try:
        yield started
    finally:
        for process in started:
            process.stop()


def test_workers_backfill_at_start_and_the_golden_cross_fires_on_the_first_check(
    environment: dict[str, str],  # set up (Redis flushed) before the first slot is sent
    servers: tuple[FakeFinnhub, FakeHistory],
    pg_db: Database,
    redis_url: str,
    request: pytest.FixtureRequest,
) -> None:
    """A fresh database, HISTORY_SOURCE set: beat's first slot is already queued when two
    generation workers start. Their start-up backfill (one task per ticker, whichever worker
    claims it) lands before that first check computes: the first check has 205 bars and all
    six golden crosses; history is fetched once per ticker and never again."""
    finnhub, history = servers
    send_generate(redis_url)  # beat's first slot, sent before any worker is up
    started: list[CeleryProcess] = request.getfixturevalue("workers")
    for process in started:
        process.wait_for("ready.", timeout=60)

    def log() -> str:
        return "".join(process.output() for process in started)

    wait_until(lambda: events(log(), "generator_ran"), timeout=90, message="the first check")
    text = log()
    first = events(text, "generator_ran")
    assert len(first) == 1, text[-3000:]
    assert (first[0]["bars"], first[0]["needed"], first[0]["new"]) == (205, 205, 6), first
    assert golden_crosses(pg_db) == sorted(TICKERS)  # on the FIRST check
    assert events(text, "generator_backfilling") == []
    requested = events(text, "history_backfill_requested")
    assert sorted(e["ticker"] for e in requested) == sorted(TICKERS), requested  # once each
    # Whoever claims a ticker first (a starting worker, or the check that arrived first).
    assert {e["trigger"] for e in requested} <= {"startup", "check"}
    assert len(events(text, "history_backfill_startup")) == 2  # both workers looked
    assert history.per_ticker("stooq") == dict.fromkeys(TICKERS, 1)
    assert finnhub.count("/stock/candle") == 0  # history was complete before the check asked

    send_generate(redis_url)
    wait_until(
        lambda: len(events(log(), "generator_ran")) == 2, timeout=30, message="a second check"
    )
    second = events(log(), "generator_ran")[1]
    assert (second["bars"], second["new"]) == (205, 0), second  # the same crosses, same ids
    assert history.count("stooq") == 6  # history never refetched once complete
    assert len(events(log(), "history_backfill_requested")) == 6
    assert finnhub.count("/stock/candle") == 0


def test_starting_workers_backfill_once_before_any_check(
    workers: list[CeleryProcess],
    servers: tuple[FakeFinnhub, FakeHistory],
    pg_db: Database,
) -> None:
    """No check sent: the workers' start-up alone backfills each short ticker, once."""
    _finnhub, history = servers
    store = BarStore(pg_db)
    wait_until(
        lambda: all(store.count(t) >= 205 for t in TICKERS),
        timeout=60,
        message="the start-up backfill",
    )
    text = "".join(process.output() for process in workers)
    requested = events(text, "history_backfill_requested")
    assert sorted(e["ticker"] for e in requested) == sorted(TICKERS)
    assert {e["trigger"] for e in requested} == {"startup"}
    assert history.per_ticker("stooq") == dict.fromkeys(TICKERS, 1)
    assert events(text, "generator_ran") == []


@pytest.fixture
def worker(environment: dict[str, str], tmp_path: Path) -> Iterator[CeleryProcess]:
    env = worker_env(environment)
    env.pop("HISTORY_SOURCE")  # the default source (stooq, here the local server), not set
    process = start_worker(env, tmp_path / "generation.log", name="generation", queues="generate")
    try:
        yield process
    finally:
        process.stop()


def test_without_history_source_no_provider_is_asked_for_history(
    worker: CeleryProcess,
    servers: tuple[FakeFinnhub, FakeHistory],
    pg_db: Database,
    redis_url: str,
) -> None:
    """HISTORY_SOURCE not set (offline development, tests): nothing is backfilled by itself,
    neither at start-up nor after a short check, although the default source (here the local
    Stooq server) would answer. The check says what is missing instead."""
    _finnhub, history = servers
    worker.wait_for('"event": "history_backfill_startup_off"', timeout=30)
    off = events(worker.output(), "history_backfill_startup_off")
    assert [e["reason"] for e in off] == ["HISTORY_SOURCE is not set"]
    for n in (1, 2):
        send_generate(redis_url)
        wait_until(
            lambda n=n: len(events(worker.output(), "generator_ran")) == n,  # type: ignore[misc]
            timeout=30,
            message=f"check {n}",
        )
    log = worker.output()
    ran = events(log, "generator_ran")
    # The quote's bar of today only: far from the 205 needed.
    assert [(e["bars"] <= 1, e["needed"], e["new"]) for e in ran] == [(True, 205, 0)] * 2, ran
    assert events(log, "history_backfill_requested") == []
    assert events(log, "generator_backfilling") == []
    assert '"event": "insufficient_data"' in log
    assert history.count("stooq") == 0  # the history server was never asked
    assert golden_crosses(pg_db) == []
