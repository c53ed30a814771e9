"""`signalgen usage --by/--budgets` and `signalgen dlq list|show|purge` on the SQLite default."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from signalgen.config.operations import get_operations_config
from signalgen.interfaces.cli import main
from signalgen.marketdata.usage import record_call
from signalgen.settings import get_settings
from signalgen.storage import get_database
from signalgen.storage.engine import ensure_schema
from signalgen.storage.models import DeadLetter


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    (tmp_path / "operations.json").write_text(
        json.dumps(
            {
                "cost_per_call": {"finnhub": 0.5},
                "budgets": {"generators": {"gc": {"calls_per_day": 4}}},
            }
        )
    )
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("OPERATIONS_CONFIG_PATH", str(tmp_path / "operations.json"))
    get_settings.cache_clear()
    get_operations_config.cache_clear()
    yield url
    get_settings.cache_clear()
    get_operations_config.cache_clear()
    get_database(url).dispose()


def test_usage_cost_per_day_and_budget_state(database_url: str) -> None:
    database = get_database(database_url)
    ensure_schema(database)
    now = datetime.now(UTC)
    record_call(database, provider="finnhub", generator="gc", endpoint="quote", calls=5, at=now)
    record_call(database, provider="finnhub", generator="news", endpoint="quote", at=now)
    result = CliRunner().invoke(main, ["usage", "--by", "day", "--budgets"])
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    day = now.strftime("%Y-%m-%d")
    assert [day, "finnhub", "gc", "5", "0", "2.5000"] in lines
    assert ["total", "6", "0", "3.0000"] in lines
    gc = next(line for line in lines if line[:1] == ["gc"] and "PAUSED" in " ".join(line))
    assert gc[1:5] == ["5", "-", "5", "4"] and "day" in " ".join(gc)


def test_dlq_list_show_purge(database_url: str) -> None:
    database = get_database(database_url)
    ensure_schema(database)
    with database.session() as session:
        session.add(DeadLetter(stage="dispatch", reason="body is not UTF-8 text", body=b"\xff\x00"))
        session.add(DeadLetter(stage="execute", reason="execution failed: HTTP 500", body=b"{}"))
    runner = CliRunner()
    listing = runner.invoke(main, ["dlq", "list", "--stage", "dispatch"])
    assert listing.exit_code == 0 and "body is not UTF-8 text" in listing.stdout
    assert "1 shown of 1" in listing.stdout
    shown = runner.invoke(main, ["dlq", "show", "1"])
    assert json.loads(shown.stdout)["body"] == "hex:ff00"
    assert runner.invoke(main, ["dlq", "show", "1", "--raw"]).stdout_bytes == b"\xff\x00"
    assert runner.invoke(main, ["dlq", "show", "9"]).exit_code == 1
    assert runner.invoke(main, ["dlq", "purge", "--yes"]).exit_code == 2  # no filter
    purged = runner.invoke(main, ["dlq", "purge", "--stage", "execute", "--yes"])
    assert "purged 1" in purged.stdout
    assert "1 shown of 1" in runner.invoke(main, ["dlq", "list"]).stdout
