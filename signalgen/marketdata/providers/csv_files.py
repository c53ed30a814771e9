"""CSV files as a `HistorySource`: `<directory>/<TICKER>.csv` (or lower case), in the import
format (`date,open,high,low,close,volume`), read and checked by `csv_import.read_bars_csv`."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from signalgen.marketdata.csv_import import CsvImportError, read_bars_csv
from signalgen.marketdata.history import ProviderDataError, SymbolNotFoundError
from signalgen.marketdata.store import BarRow


class CsvHistory:
    name = "csv"

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"CsvHistory({str(self.directory)!r})"

    def path_of(self, ticker: str) -> Path:
        for candidate in (f"{ticker}.csv", f"{ticker.lower()}.csv"):
            path = self.directory / candidate
            if path.is_file():
                return path
        raise SymbolNotFoundError(f"csv: no {ticker}.csv in {self.directory}")

    def daily_bars(
        self, ticker: str, start: date, end: date, *, timeout: float | None = None
    ) -> list[BarRow]:
        try:
            rows = read_bars_csv(self.path_of(ticker)).rows
        except CsvImportError as exc:
            raise ProviderDataError(f"csv: {exc}") from None
        return [row for row in rows if start <= row.day <= end]
