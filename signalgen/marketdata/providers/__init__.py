"""History providers: one module each, every one a `signalgen.marketdata.history.HistorySource`;
`history_source(settings, name)` builds the one `HISTORY_SOURCE` names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from signalgen.marketdata.history import HISTORY_SOURCES, HistorySource, HttpGetter, http_get
from signalgen.marketdata.providers.alphavantage import AlphaVantageHistory
from signalgen.marketdata.providers.csv_files import CsvHistory
from signalgen.marketdata.providers.finnhub_candles import FinnhubCandlesHistory
from signalgen.marketdata.providers.stooq import StooqHistory
from signalgen.marketdata.providers.tiingo import TiingoHistory

if TYPE_CHECKING:
    from signalgen.settings import Settings

__all__ = [
    "AlphaVantageHistory",
    "CsvHistory",
    "FinnhubCandlesHistory",
    "StooqHistory",
    "TiingoHistory",
    "history_source",
]


def history_source(
    settings: Settings,
    name: str | None = None,
    *,
    database: Any = None,
    get: HttpGetter | None = None,
) -> HistorySource:
    """The history source `name` (default: `HISTORY_SOURCE`) configured from `settings`.

    Raises ValueError naming the setting when the provider needs a key that is not set, or
    the name is unknown. `database` (Finnhub only) counts candle calls in the usage table.
    """
    chosen = (name or settings.history_source).strip().lower()
    if chosen not in HISTORY_SOURCES:
        raise ValueError(
            f"HISTORY_SOURCE: unknown history source {chosen!r} "
            f"(one of {', '.join(HISTORY_SOURCES)})"
        )
    getter = get or http_get()
    if chosen == "stooq":
        return StooqHistory(settings.stooq_base_url, get=getter)
    if chosen == "tiingo":
        if settings.tiingo_api_key is None:
            raise ValueError("TIINGO_API_KEY is not set: Tiingo needs a (free) API key")
        return TiingoHistory(
            settings.tiingo_api_key.get_secret_value(), settings.tiingo_base_url, get=getter
        )
    if chosen == "alphavantage":
        if settings.alphavantage_api_key is None:
            raise ValueError("ALPHAVANTAGE_API_KEY is not set: Alpha Vantage needs a (free) key")
        return AlphaVantageHistory(
            settings.alphavantage_api_key.get_secret_value(),
            settings.alphavantage_base_url,
            get=getter,
        )
    if chosen == "finnhub":
        if settings.finnhub_api_key is None:
            raise ValueError("FINNHUB_API_KEY is not set: Finnhub candles need a paid plan's key")
        from signalgen.marketdata import source_from_settings

        return FinnhubCandlesHistory(source_from_settings(settings, database))
    if settings.history_csv_dir is None:
        raise ValueError("HISTORY_CSV_DIR is not set: the csv source reads <TICKER>.csv there")
    return CsvHistory(settings.history_csv_dir)
