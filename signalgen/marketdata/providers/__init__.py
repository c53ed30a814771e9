"""History providers: one module each, every one a `signalgen.marketdata.history.HistorySource`."""

from signalgen.marketdata.providers.alphavantage import AlphaVantageHistory
from signalgen.marketdata.providers.csv_files import CsvHistory
from signalgen.marketdata.providers.finnhub_candles import FinnhubCandlesHistory
from signalgen.marketdata.providers.stooq import StooqHistory
from signalgen.marketdata.providers.tiingo import TiingoHistory

__all__ = [
    "AlphaVantageHistory",
    "CsvHistory",
    "FinnhubCandlesHistory",
    "StooqHistory",
    "TiingoHistory",
]
