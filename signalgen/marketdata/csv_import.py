"""Daily bars from CSV: `date,open,high,low,close,volume` (header required, extra columns ignored).

The whole file is read and checked before anything is written, and the write is one
transaction, so a bad file leaves the store as it was. Errors name the line and the column.
Quirks real data has (a high below the low, an open outside the day's range) are warnings.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from signalgen.marketdata.store import DEFAULT_BATCH_SIZE, BarRow, BarStore
from signalgen.paths import SAMPLE_DATA_DIR

REQUIRED_COLUMNS = ("date", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
#: How many errors an exception message lists before "... and N more".
MAX_LISTED_ERRORS = 20


@dataclass(frozen=True, slots=True)
class CsvIssue:
    """A problem at `line` (1-based, the header is line 1) in `column` (None: the whole line)."""

    line: int
    column: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column!r}" if self.column else "")
        return f"{where}: {self.message}"


class CsvImportError(ValueError):
    """The file cannot be imported; `issues` says where and why."""

    def __init__(self, path: Path | str, issues: list[CsvIssue]) -> None:
        self.path = str(path)
        self.issues = issues
        listed = "\n  ".join(str(issue) for issue in issues[:MAX_LISTED_ERRORS])
        more = len(issues) - MAX_LISTED_ERRORS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{self.path}: {len(issues)} error(s)\n  {listed}{tail}")


@dataclass
class CsvBars:
    """What a CSV file holds: bars in date order, and warnings about quirks kept as they are."""

    rows: list[BarRow]
    warnings: list[CsvIssue] = field(default_factory=list)


@dataclass(frozen=True)
class ImportResult:
    ticker: str
    rows: int
    first_day: date
    last_day: date
    warnings: tuple[CsvIssue, ...]


def _number(text: str, line: int, column: str, issues: list[CsvIssue]) -> float | None:
    try:
        value = float(text)
    except ValueError:
        issues.append(CsvIssue(line, column, f"not a number: {text!r}"))
        return None
    if not math.isfinite(value):
        issues.append(CsvIssue(line, column, f"not a finite number: {text!r}"))
        return None
    if value < 0:
        issues.append(CsvIssue(line, column, f"negative value {value:g}"))
        return None
    return value


def read_bars_csv(path: Path | str) -> CsvBars:
    """Parse and check a bars CSV. Raises `CsvImportError` listing every error found."""
    path = Path(path)
    issues: list[CsvIssue] = []
    warnings: list[CsvIssue] = []
    rows: list[BarRow] = []
    seen: dict[date, int] = {}
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise CsvImportError(path, [CsvIssue(0, None, f"cannot open: {exc.strerror}")]) from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise CsvImportError(path, [CsvIssue(1, None, f"unreadable: {exc}")]) from None
        if header is None:
            raise CsvImportError(
                path,
                [
                    CsvIssue(
                        1, None, f"empty file: a header {','.join(REQUIRED_COLUMNS)} is required"
                    )
                ],
            )
        names = [name.strip().lower() for name in header]
        missing = [name for name in REQUIRED_COLUMNS if name not in names]
        if missing:
            raise CsvImportError(
                path,
                [
                    CsvIssue(
                        1,
                        None,
                        f"header lacks {', '.join(missing)} "
                        f"(required: {','.join(REQUIRED_COLUMNS)})",
                    )
                ],
            )
        position = {name: names.index(name) for name in REQUIRED_COLUMNS}
        width = max(position.values()) + 1
        try:
            for record in reader:
                line = reader.line_num
                if not record or all(not cell.strip() for cell in record):
                    continue
                if len(record) < width:
                    issues.append(
                        CsvIssue(line, None, f"{len(record)} fields, expected at least {width}")
                    )
                    continue
                row = _parse_row(record, position, line, issues, warnings)
                if row is None:
                    continue
                if row.day in seen:
                    issues.append(
                        CsvIssue(
                            line,
                            "date",
                            f"duplicate date {row.day.isoformat()} (first on line {seen[row.day]})",
                        )
                    )
                    continue
                seen[row.day] = line
                rows.append(row)
        except (csv.Error, UnicodeDecodeError) as exc:
            issues.append(CsvIssue(reader.line_num, None, f"unreadable: {exc}"))
    if not rows and not issues:
        issues.append(CsvIssue(1, None, "no data rows after the header"))
    if issues:
        raise CsvImportError(path, issues)
    rows.sort(key=lambda bar: bar.day)
    return CsvBars(rows=rows, warnings=warnings)


def _parse_row(
    record: list[str],
    position: dict[str, int],
    line: int,
    issues: list[CsvIssue],
    warnings: list[CsvIssue],
) -> BarRow | None:
    errors_before = len(issues)
    text = record[position["date"]].strip()
    day: date | None = None
    try:
        if len(text) > 10 and text[10] not in "T ":
            raise ValueError(text)
        day = date.fromisoformat(text[:10])  # a time of day after the date is ignored
    except ValueError:
        issues.append(CsvIssue(line, "date", f"not a date (YYYY-MM-DD): {text!r}"))
    values = {
        name: _number(record[position[name]].strip(), line, name, issues)
        for name in (*PRICE_COLUMNS, "volume")
    }
    if len(issues) > errors_before or day is None:
        return None
    o, h, low, c, v = (values[name] for name in (*PRICE_COLUMNS, "volume"))
    assert o is not None and h is not None and low is not None and c is not None
    assert v is not None
    if h < low:
        warnings.append(CsvIssue(line, "high", f"high {h:g} is below low {low:g}; kept as is"))
    else:
        for name, value in (("open", o), ("close", c)):
            if not low <= value <= h:
                warnings.append(
                    CsvIssue(
                        line,
                        name,
                        f"{name} {value:g} is outside the day's range [{low:g}, {h:g}]; kept as is",
                    )
                )
    return BarRow(day=day, open=o, high=h, low=low, close=c, volume=v)


def import_csv(
    store: BarStore,
    path: Path | str,
    ticker: str,
    *,
    source: str = "csv",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
    on_parsed: Callable[[CsvBars], None] | None = None,
) -> ImportResult:
    """Check the whole file, then upsert its bars for `ticker` in one transaction.

    `progress(n)` is called after each batch of `n` rows written; `on_parsed(bars)` once the
    file is checked, before the first write (a command line sizes its progress bar there).
    Raises `CsvImportError` (nothing written) when the file has errors.
    """
    parsed = read_bars_csv(path)
    if on_parsed is not None:
        on_parsed(parsed)
    with store.transaction() as session:
        written = store.upsert_bars(
            ticker,
            parsed.rows,
            source=source,
            batch_size=batch_size,
            session=session,
            progress=progress,
        )
    return ImportResult(
        ticker=ticker,
        rows=written,
        first_day=parsed.rows[0].day,
        last_day=parsed.rows[-1].day,
        warnings=tuple(parsed.warnings),
    )


def load_sample_bars(
    store: BarStore, directory: Path = SAMPLE_DATA_DIR, *, last: int = 450
) -> dict[str, int]:
    """Import the last `last` bars of each bundled sample file (`<TICKER>.csv`), on their real
    dates; returns rows per ticker. Idempotent (upserts).

    A fixed, dated history for tests and demos. `signalgen dev` loads the same files re-dated to
    end today instead (`signalgen.marketdata.sample.load_aligned_sample_bars`).
    """
    loaded: dict[str, int] = {}
    for path in sorted(directory.glob("*.csv")):
        ticker = path.stem.upper()
        rows = read_bars_csv(path).rows[-last:]
        loaded[ticker] = store.upsert_bars(ticker, rows, source="sample")
    return loaded
