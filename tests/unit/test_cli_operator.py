"""The smaller operator points: `--version`, `db upgrade` saying what it did, `--owner` taking a
user name (unknown owners refused once users exist), the budgets table aligned, a broken
watchlist stopping `signalgen api` and failing `/readyz`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from signalgen.config.operations import get_operations_config
from signalgen.interfaces.cli import main, version
from signalgen.settings import get_settings
from signalgen.storage import get_database
from signalgen.storage.engine import ensure_schema


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'operator.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing there: bumps are noted
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
    get_database(url).dispose()


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"signalgen, version {version()}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version())


def test_db_upgrade_says_what_it_did(database_url: str) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert first.output.startswith("database schema created at revision ")
    assert "up to date" not in first.output
    head = first.output.split("revision ", 1)[1].split(":", 1)[0]
    again = runner.invoke(main, ["db", "upgrade"])
    assert again.output.startswith(f"database schema at revision {head} (up to date)")


def test_db_upgrade_loads_the_sample_bars_once(database_url: str) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["db", "upgrade", "--sample-bars"])
    assert first.exit_code == 0, first.output
    assert re.search(r"loaded \d+ sample bars for AAPL, ", first.output)
    again = runner.invoke(main, ["db", "upgrade", "--sample-bars"])
    assert "bar store not empty: sample bars not loaded" in again.output


def test_listings_never_migrate_and_writes_do(database_url: str) -> None:
    from sqlalchemy import inspect

    runner = CliRunner()
    for listing in (["users", "list"], ["keys", "list"], ["pipelines", "list"], ["dlq", "list"]):
        result = runner.invoke(main, listing)
        assert result.exit_code != 0, (listing, result.output)
        assert inspect(get_database(database_url).engine).get_table_names() == [], listing
    added = runner.invoke(main, ["users", "add", "alice", "--no-key"])
    assert added.exit_code == 0, added.output
    assert "users" in inspect(get_database(database_url).engine).get_table_names()
    listed = runner.invoke(main, ["users", "list"])
    assert listed.exit_code == 0 and listed.output.startswith("alice "), listed.output


def test_owner_takes_a_user_name_and_refuses_unknown_ones_once_users_exist(
    database_url: str,
) -> None:
    runner = CliRunner()
    help_text = runner.invoke(main, ["pipelines", "add", "--help"]).output
    assert "--owner USER" in help_text and "user's name" in help_text
    add = ["pipelines", "add", "--name", "n", "--tickers", "AAPL", "--owner"]

    lonely = runner.invoke(main, [*add, "ghost"])  # no users at all: allowed, with a note
    assert lonely.exit_code == 0, lonely.output
    assert "note: no users exist yet; owner 'ghost' is not a user" in lonely.stderr

    assert runner.invoke(main, ["users", "add", "alice", "--no-key"]).exit_code == 0
    refused = runner.invoke(main, [*add, "bob"])
    assert refused.exit_code != 0
    assert "owner: no user named 'bob'" in refused.output
    allowed = runner.invoke(main, [*add, "alice"])
    assert allowed.exit_code == 0, allowed.output
    assert "no user named" not in allowed.stderr

    doc = json.dumps(
        [{"owner": "bob", "name": "m", "trigger_mode": "signal", "scanner": {"tickers": ["MSFT"]}}]
    )
    imported = runner.invoke(main, ["pipelines", "import", "-"], input=doc)
    assert imported.exit_code != 0 and "no user named 'bob'" in imported.output


def test_budgets_table_is_aligned(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signalgen.marketdata.usage import record_call

    (tmp_path / "operations.json").write_text(
        json.dumps(
            {
                "cost_per_call": {"finnhub": 0.5},
                "budgets": {"generators": {"gc": {"calls_per_day": 4}}},
            }
        )
    )
    monkeypatch.setenv("OPERATIONS_CONFIG_PATH", str(tmp_path / "operations.json"))
    get_operations_config.cache_clear()
    try:
        database = get_database(database_url)
        ensure_schema(database)
        now = datetime.now(UTC)
        long_name = "a_generator_with_a_rather_long_name"
        record_call(database, provider="finnhub", generator="gc", endpoint="quote", calls=5, at=now)
        record_call(database, provider="finnhub", generator=long_name, endpoint="quote", at=now)
        result = CliRunner().invoke(main, ["usage", "--budgets"])
    finally:
        get_operations_config.cache_clear()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("generator"))
    table = lines[header:]
    assert {"gc", long_name} <= {line.split()[0] for line in table[1:]}
    # Every number column ends where its header ends: right-aligned under it.
    cost = re.search(r"cost today \S+", table[0])
    assert cost is not None
    for title in ("calls this hour", "hour limit", "calls today", "day limit", cost[0]):
        end = table[0].index(title) + len(title)
        for row in table[1:]:
            assert row[end - 1] != " " and (len(row) == end or row[end] == " "), (title, row)
    state = table[0].index("state")
    assert all(row[state - 1] == " " for row in table[1:])
    assert "PAUSED" in next(row for row in table if row.startswith("gc "))[state:]


def test_api_refuses_to_start_with_a_broken_watchlist(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signalgen.config import ConfigError
    from signalgen.interfaces.cli.http import serve

    broken = tmp_path / "watchlist.json"
    broken.write_text('{"tickers": ["aapl"]')
    monkeypatch.setenv("WATCHLIST_CONFIG_PATH", str(broken))
    get_settings.cache_clear()
    with pytest.raises(ConfigError, match=re.escape(f"{broken}: invalid JSON")):
        serve("127.0.0.1", 0)


def test_readyz_is_unavailable_with_a_broken_watchlist(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from signalgen.interfaces.http.app import create_app
    from signalgen.startup import configuration_problem
    from tests.support.api_server import running_server

    database = get_database(database_url)
    ensure_schema(database)
    app = create_app(database=database, redis_url="redis://127.0.0.1:1/0")
    with running_server(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/readyz").json()["checks"]["config"] == "ok"
        watchlist = tmp_path / "watchlist.json"
        watchlist.write_text(json.dumps({"tickers": ["not a ticker"]}))
        monkeypatch.setenv("WATCHLIST_CONFIG_PATH", str(watchlist))
        get_settings.cache_clear()
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"]["config"] == "invalid"
    assert str(watchlist) not in answer.text  # the path is for the log, not an anonymous caller
    problem = configuration_problem(get_settings())
    assert problem is not None and problem.startswith(f"{watchlist}: ")


def test_a_written_path_option_refuses_a_folder_for_a_file_and_writes_a_new_file(
    tmp_path: Path,
) -> None:
    """`written_path` options (api --openapi, backtest --plot/--report, pipelines export
    --output): a path the command cannot write as a file is refused before any work, with the
    option named; a new file is written."""
    refused = CliRunner().invoke(main, ["api", "--openapi", str(tmp_path)])
    assert refused.exit_code == 2
    assert "--openapi" in refused.output and "directory" in refused.output
    target = tmp_path / "openapi.json"
    written = CliRunner().invoke(main, ["api", "--openapi", str(target)])
    assert written.exit_code == 0, written.output
    assert json.loads(target.read_text())["openapi"].startswith("3.")
