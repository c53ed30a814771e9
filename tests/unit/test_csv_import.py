"""CSV import: the real files in tests/data/market, and every way a file can be wrong."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest

from signalgen.marketdata.csv_import import (
    CsvImportError,
    import_csv,
    load_sample_bars,
    read_bars_csv,
)
from signalgen.marketdata.store import BarStore
from signalgen.paths import SAMPLE_DATA_DIR
from signalgen.storage import Database
from tests.conftest import DATA_DIR

MARKET = DATA_DIR / "market"
#: Bar counts from tests/data/market/README.md.
EXPECTED_BARS = {
    "nvda_1999_2014.csv": 4012,
    "orcl_1995_2014.csv": 5036,
    "yhoo_1996_2014.csv": 4713,
    "aapl_2004_2018.csv": 3379,
    "intc_1995_2004.csv": 2335,
    "spy_2008_2017.csv": 2519,
}
HEADER = "date,open,high,low,close,volume\n"


@pytest.fixture
def store(sqlite_db: Database) -> BarStore:
    return BarStore(sqlite_db)


def write(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def issues_of(path: Path) -> list[tuple[int, str | None, str]]:
    with pytest.raises(CsvImportError) as caught:
        read_bars_csv(path)
    return [(i.line, i.column, i.message) for i in caught.value.issues]


@pytest.mark.parametrize("name", sorted(EXPECTED_BARS))
def test_real_files_read_completely_in_date_order(name: str) -> None:
    parsed = read_bars_csv(MARKET / name)
    assert len(parsed.rows) == EXPECTED_BARS[name]
    days = [row.day for row in parsed.rows]
    assert days == sorted(set(days))
    with (MARKET / name).open() as handle:
        last = list(csv.DictReader(handle))[-1]
    assert parsed.rows[-1].day == date.fromisoformat(last["date"])
    assert parsed.rows[-1].close == float(last["close"])
    assert parsed.rows[-1].volume == float(last["volume"])


def test_spy_quirks_are_warnings_naming_their_lines() -> None:
    parsed = read_bars_csv(MARKET / "spy_2008_2017.csv")
    by_line = dict(enumerate(csv.DictReader((MARKET / "spy_2008_2017.csv").open()), start=2))
    flagged = {by_line[w.line]["date"] for w in parsed.warnings if w.column == "open"}
    assert {"2015-03-05", "2015-03-30"} <= flagged
    assert all("kept as is" in w.message for w in parsed.warnings)


def test_errors_name_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + "2024-01-02,10,11,9,10.5,100\n"
        + "2024-13-01,10,11,9,10.5,100\n"
        + "2024-01-04,ten,11,9,10.5,100\n"
        + "2024-01-05,10,11,9,-10.5,100\n"
        + "2024-01-02,10,11,9,10.5,100\n"
        + "2024-01-08,10,11,9,10.5,nan\n"
        + "2024-01-09,10,11\n",
    )
    assert issues_of(path) == [
        (3, "date", "not a date (YYYY-MM-DD): '2024-13-01'"),
        (4, "open", "not a number: 'ten'"),
        (5, "close", "negative value -10.5"),
        (6, "date", "duplicate date 2024-01-02 (first on line 2)"),
        (7, "volume", "not a finite number: 'nan'"),
        (8, None, "3 fields, expected at least 6"),
    ]
    with pytest.raises(CsvImportError, match=r"line 4, column 'open': not a number"):
        read_bars_csv(path)


def test_high_below_low_is_a_warning_not_an_error(tmp_path: Path) -> None:
    parsed = read_bars_csv(write(tmp_path, HEADER + "2024-01-02,10,9,11,10,100\n"))
    assert len(parsed.rows) == 1
    assert [(w.line, w.column) for w in parsed.warnings] == [(2, "high")]


def test_header_is_required_and_extra_columns_are_ignored(tmp_path: Path) -> None:
    assert issues_of(write(tmp_path, "2024-01-02,10,11,9,10.5,100\n"))[0][0] == 1
    assert "header lacks volume" in issues_of(write(tmp_path, "date,open,high,low,close\n"))[0][2]
    assert "empty file" in issues_of(write(tmp_path, ""))[0][2]
    assert "no data rows" in issues_of(write(tmp_path, HEADER))[0][2]
    parsed = read_bars_csv(
        write(
            tmp_path,
            "Volume,Adj Close,Date,Close,Low,High,Open\n"
            "100,1.0,2024-01-03,10.5,9,11,10\n"
            "200,1.0,2024-01-02 00:00:00,10,9,11,10\n",
        )
    )
    assert [(r.day, r.open, r.close, r.volume) for r in parsed.rows] == [
        (date(2024, 1, 2), 10.0, 10.0, 200.0),
        (date(2024, 1, 3), 10.0, 10.5, 100.0),
    ]


def test_missing_file_is_an_import_error(tmp_path: Path) -> None:
    assert "cannot open" in issues_of(tmp_path / "nope.csv")[0][2]


def test_import_writes_in_batches_with_progress(store: BarStore) -> None:
    seen: list[int] = []
    result = import_csv(
        store, MARKET / "intc_1995_2004.csv", "INTC", batch_size=1000, progress=seen.append
    )
    assert result.rows == 2335 and seen == [1000, 1000, 335]
    assert store.count("INTC") == 2335
    assert (result.first_day, result.last_day) == (date(1995, 1, 3), store.latest_day("INTC"))


def test_a_bad_file_writes_nothing(store: BarStore, tmp_path: Path) -> None:
    import_csv(store, MARKET / "spy_2008_2017.csv", "SPY")
    before = store.load_bars(["SPY"], 3000)
    bad = write(tmp_path, HEADER + "2017-12-29,1,1,1,1,1\n2017-12-28,x,1,1,1,1\n")
    with pytest.raises(CsvImportError):
        import_csv(store, bad, "SPY")
    after = store.load_bars(["SPY"], 3000)
    assert (after.close == before.close).all()


def test_an_import_failing_midway_is_rolled_back(store: BarStore) -> None:
    def fail_after_first_batch(n: int) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        import_csv(
            store,
            MARKET / "aapl_2004_2018.csv",
            "AAPL",
            batch_size=100,
            progress=fail_after_first_batch,
        )
    assert store.count("AAPL") == 0


def test_sample_bars_load_every_bundled_ticker(store: BarStore) -> None:
    loaded = load_sample_bars(store)
    assert loaded == dict.fromkeys(("AAPL", "INTC", "NVDA", "ORCL", "SPY", "YHOO"), 450)
    assert sorted(p.stem for p in SAMPLE_DATA_DIR.glob("*.csv")) == sorted(loaded)
    assert store.latest_day("AAPL") == read_bars_csv(MARKET / "aapl_2004_2018.csv").rows[-1].day
    assert load_sample_bars(store) == loaded  # idempotent
    assert store.count("SPY") == 450
