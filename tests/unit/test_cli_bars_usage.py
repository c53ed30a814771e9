"""`signalgen bars` and `signalgen usage` on the SQLite default (tables created on first use)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from signalgen.interfaces.cli import main
from signalgen.marketdata.store import BarStore
from signalgen.marketdata.usage import record_call
from signalgen.settings import get_settings
from signalgen.storage import get_database
from tests.conftest import DATA_DIR


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
    get_database(url).dispose()


def test_bars_import_then_list(database_url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, ["bars", "import", str(DATA_DIR / "market" / "spy_2008_2017.csv"), "--ticker", "SPY"]
    )
    assert result.exit_code == 0, result.output
    assert "imported 2519 rows for SPY (2007-12-31 .. 2017-12-29)" in result.stdout
    assert "warning:" in result.stderr  # SPY's open-below-low quirks
    listed = runner.invoke(main, ["bars", "list"])
    assert listed.exit_code == 0
    assert listed.stdout.splitlines()[1].split() == ["SPY", "2519", "2007-12-31", "2017-12-29"]


def test_bars_import_of_a_bad_file_exits_2_and_writes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "date,open,high,low,close,volume\n2024-01-02,1,2,1,1,5\n2024-01-03,1,2,1,oops,5\n"
    )
    result = CliRunner().invoke(main, ["bars", "import", str(bad), "--ticker", "BAD"])
    assert result.exit_code == 2
    assert "line 3, column 'close': not a number: 'oops'" in result.stderr
    assert BarStore(get_database(database_url)).count("BAD") == 0


def test_bars_import_refuses_a_lower_case_ticker(database_url: str) -> None:
    result = CliRunner().invoke(
        main, ["bars", "import", str(DATA_DIR / "market" / "spy_2008_2017.csv"), "--ticker", "spy"]
    )
    assert result.exit_code == 2
    assert "upper case" in result.stderr


def test_usage_prints_calls_and_errors_per_generator(database_url: str) -> None:
    runner = CliRunner()
    assert "no provider calls recorded" in runner.invoke(main, ["usage"]).stdout
    database = get_database(database_url)
    at = datetime(2024, 5, 1, 13, 30, tzinfo=UTC)
    for error in (False, False, True):
        record_call(
            database,
            provider="finnhub",
            generator="golden_cross",
            endpoint="quote",
            error=error,
            at=at,
        )
    record_call(database, provider="finnhub", generator="news", endpoint="company-news", at=at)
    result = runner.invoke(main, ["usage"])
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["finnhub", "golden_cross", "quote", "3", "1"] in lines
    assert ["finnhub", "news", "company-news", "1", "0"] in lines
    assert lines[-1] == ["total", "4", "1"]
    only = runner.invoke(main, ["usage", "--generator", "news", "--since", "2024-05-01T13:00"])
    assert [line.split()[1] for line in only.stdout.splitlines()[1:-1]] == ["news"]
    later = runner.invoke(main, ["usage", "--since", "2024-05-01T14:00+00:00"])
    assert "no provider calls recorded" in later.stdout
    assert runner.invoke(main, ["usage", "--since", "yesterday"]).exit_code == 2
