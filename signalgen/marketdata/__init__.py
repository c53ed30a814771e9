"""Daily market data at the edge: a bar store, CSV imports, Finnhub, a shared limiter, usage.

Generators never import this package; the generate path loads `Bars` through `BarStore` and
keeps them fresh with `refresh_bars` before calling a generator's pure `compute`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signalgen.marketdata.finnhub import FinnhubSource
    from signalgen.marketdata.refresh import RefreshReport, refresh_bars
    from signalgen.marketdata.store import BarRow, BarStore
    from signalgen.settings import Settings
    from signalgen.storage.engine import Database

__all__ = ["BarRow", "BarStore", "RefreshReport", "refresh_bars", "source_from_settings"]

#: Loaded on first use (PEP 562): a delivery worker imports `marketdata.limiter` for its rate
#: limits, and must not pay for the bar store's and calendar's numpy on the way.
_LAZY = {
    "BarRow": "signalgen.marketdata.store",
    "BarStore": "signalgen.marketdata.store",
    "RefreshReport": "signalgen.marketdata.refresh",
    "refresh_bars": "signalgen.marketdata.refresh",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def source_from_settings(settings: Settings, database: Database) -> FinnhubSource:
    """The live Finnhub source of a worker: shared Redis limiter and entitlement memory (on
    `settings.effective_redis_url`), every call counted in `database` and checked against the
    generator's budget (config/operations.json). Needs FINNHUB_API_KEY."""
    import redis

    from signalgen.config.operations import get_operations_config
    from signalgen.marketdata.costs import BudgetGuard
    from signalgen.marketdata.finnhub import FinnhubSource
    from signalgen.marketdata.usage import DatabaseUsage

    client = redis.Redis.from_url(settings.effective_redis_url)
    budget = BudgetGuard(client, get_operations_config(), database=database)
    return FinnhubSource.from_settings(
        settings, redis_client=client, usage=DatabaseUsage(database), budget=budget
    )
