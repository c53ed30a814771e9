"""Provider calls per ticker per day at 5-minute checks, beside the seed's formula.

The seed asked Finnhub for a quote of every ticker on every check, day and night: 24 h x 12
checks an hour = 288 calls per ticker per day, whatever the exchange did. This bench runs the real
refresh path (`refresh_bars`, `FinnhubSource` through finnhub-python, the shared limiter and the
negative cache on an in-process Redis, bars in SQLite) against the local Finnhub stand-in
(bench/fakes/fake_finnhub.py), with the XNYS calendar, at one check every 5 minutes over whole
New York days: a regular trading day, the half day after Thanksgiving, a holiday and a Saturday.
It counts the calls at the server. N tickers hold complete history (no candle requests), plus one
unknown ticker, for the negative cache.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import date, datetime, time, timedelta
from pathlib import Path

N_TICKERS = 5
SEED_CALLS_PER_TICKER_PER_DAY = 24 * 12  # the seed: one quote per ticker per 5-minute check
DAYS = (
    ("regular trading day", date(2024, 3, 6)),
    ("half day (closes 13:00 ET)", date(2024, 11, 29)),
    ("holiday (Independence Day)", date(2024, 7, 4)),
    ("weekend day (Saturday)", date(2024, 3, 9)),
)
TOKEN = "bench-token"


def run() -> None:
    import fakeredis

    from bench.fakes.fake_finnhub import FakeFinnhub
    from signalgen.marketdata.breaker import RedisNoDataCache
    from signalgen.marketdata.calendar import market_calendar
    from signalgen.marketdata.finnhub import FinnhubSource, RedisEntitlements
    from signalgen.marketdata.limiter import Limit, RedisRateLimiter
    from signalgen.marketdata.refresh import refresh_bars
    from signalgen.marketdata.store import BarRow, BarStore
    from signalgen.storage import Database
    from signalgen.storage.base import Base

    logging.getLogger("signalgen").setLevel(logging.ERROR)  # the unknown ticker's one warning
    calendar = market_calendar("XNYS")
    tickers = tuple(f"T{i:02d}" for i in range(N_TICKERS))
    print(
        f"{N_TICKERS} tickers with complete history + 1 unknown ticker, a check every 5 minutes "
        f"over each whole New York day, calendar {calendar.name}; calls counted at the server"
    )
    print(
        f"{'day':<30}{'checks':>7}{'calls/ticker':>14}{'unknown ticker':>16}"
        f"{'seed formula':>14}{'ratio':>8}"
    )
    with tempfile.TemporaryDirectory() as folder, FakeFinnhub(token=TOKEN) as server:
        import signalgen.storage.models  # noqa: F401  (registers tables)

        database = Database(f"sqlite:///{Path(folder) / 'bench.db'}")
        Base.metadata.create_all(database.engine)
        store = BarStore(database)
        redis = fakeredis.FakeRedis()
        source = FinnhubSource(
            TOKEN,
            limiter=RedisRateLimiter(redis, [Limit(10_000, 1.0)], key="bench:limiter"),
            base_url=server.base_url,
            entitlements=RedisEntitlements(redis, "bench"),
            no_data=RedisNoDataCache(redis),
        )
        totals = {"trading": 0}
        try:
            for label, day in DAYS:
                start = datetime.combine(day, time.min, calendar.tz)
                previous = calendar.last_closed_session(start).day
                for ticker in tickers:  # history up to the previous session: only quotes needed
                    store.upsert_bars(ticker, [BarRow(previous, 100, 101, 99, 100, 1e6)])
                before = len(server.requests)
                checks = 0
                moment = start
                while moment.date() == day:
                    now = moment.astimezone(calendar.tz)
                    trade = now if calendar.is_open(now) else None
                    if trade is None:
                        trade = calendar.last_closed_session(now).close - timedelta(seconds=1)
                    for ticker in tickers:
                        server.quotes[ticker] = {
                            "c": 100.5,
                            "h": 101.0,
                            "l": 99.5,
                            "o": 100.0,
                            "pc": 100.0,
                            "t": int(trade.timestamp()),
                        }
                    refresh_bars(
                        store, source, (*tickers, "ZZZZ"), 1, "bench", now=now, calendar=calendar
                    )
                    checks += 1
                    moment += timedelta(minutes=5)
                asked = [r for r in server.requests[before:] if r.path == "/quote"]
                unknown = sum(1 for r in asked if r.query["symbol"] == "ZZZZ")
                per_ticker = (len(asked) - unknown) / N_TICKERS
                ratio = SEED_CALLS_PER_TICKER_PER_DAY / per_ticker if per_ticker else float("inf")
                print(
                    f"{label:<30}{checks:>7}{per_ticker:>14.1f}{unknown:>16}"
                    f"{SEED_CALLS_PER_TICKER_PER_DAY:>14}{ratio:>7.1f}x"
                )
                if day == DAYS[0][1]:
                    totals["trading"] = round(per_ticker * N_TICKERS)
        finally:
            source.close()
            database.dispose()
    trading = totals["trading"] / N_TICKERS
    seed = SEED_CALLS_PER_TICKER_PER_DAY
    print(
        f"provider calls per ticker per trading day: {trading:.1f} beside the seed's {seed} "
        f"(24 h x 12): {seed / trading:.1f}x fewer. 78 checks in 09:30-16:00 ET + 1 to "
        "finalize the close; the unknown ticker is asked once, then after each back-off "
        "(1 h, doubling)"
    )


if __name__ == "__main__":
    run()
