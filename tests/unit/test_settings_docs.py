"""The README's configuration table and docs/configuration.md are what `Settings` generates:
they cannot drift from the variables the service reads."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from signalgen.paths import PROJECT_ROOT
from signalgen.settings import (
    CONFIGURATION_DOC,
    README,
    README_END,
    README_START,
    configuration_doc,
    main,
    markdown_table,
    readme_section,
    readme_with_section,
    variable_names,
)

FIX = "run `python -m signalgen.settings --write` and commit the result"

#: Variables in .env.example that docker compose reads, not the service: name -> why.
COMPOSE_ONLY = {
    "API_PORT": "published port of the api container",
    "FLOWER_PORT": "published port of the flower container",
    "FLOWER_BASIC_AUTH": "Flower's own login",
    "POSTGRES_PASSWORD": "the postgres container's password (part of DATABASE_URL)",
    "REDIS_MAXMEMORY": "the redis container's memory cap",
    "WEBHOOK_TRADINGVIEW_SECRET": "a webhook secret named by `secret_env` in config/webhooks.json",
    "WEBHOOK_CUSTOM_SECRET": "as WEBHOOK_TRADINGVIEW_SECRET",
}


def test_readme_table_is_the_generated_one() -> None:
    readme = README.read_text(encoding="utf-8")
    start, end = readme.index(README_START), readme.index(README_END) + len(README_END)
    assert readme[start:end] == readme_section(), FIX


def test_configuration_doc_is_the_generated_one() -> None:
    assert CONFIGURATION_DOC.read_text(encoding="utf-8") == configuration_doc(), FIX


def test_the_doc_lists_every_variable_and_the_readme_the_main_ones() -> None:
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \|", configuration_doc(), re.MULTILINE)
    assert rows == list(variable_names())
    main_rows = re.findall(r"^\| `([A-Z0-9_]+)` \|", readme_section(), re.MULTILINE)
    assert {"BROKER_URL", "DATABASE_URL", "REDIS_URL", "LOG_LEVEL"} <= set(main_rows)
    assert 0 < len(main_rows) < len(rows)
    assert f"Every variable ({len(rows)})" in readme_section()


def test_rows_show_type_default_and_meaning() -> None:
    table = markdown_table()
    assert "| `MARKET_DATA_BUDGET_SECONDS` | number > 0, ≤ 300 | `8` | wall-time bound" in table
    assert "| `WATCHLIST_CONFIG_PATH` | path | `config/watchlist.json` |" in table
    assert "| `BEAT_SEND_ONCE` | switch | on |" in table
    assert "| `HISTORY_SOURCE` | one of `stooq`, `tiingo`, `alphavantage`" in table
    assert "| `FINNHUB_API_KEY` | secret | unset |" in table
    assert str(PROJECT_ROOT) not in table  # no machine's paths


def test_write_replaces_only_the_generated_section() -> None:
    readme = f"# Title\n\n{README_START}\nold table\n{README_END}\n\nafter\n"
    assert readme_with_section(readme) == f"# Title\n\n{readme_section()}\n\nafter\n"
    with pytest.raises(ValueError, match="no generated settings section"):
        readme_with_section("# Title\n")


def test_markdown_flag_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--markdown"]) == 0
    assert capsys.readouterr().out == markdown_table()
    assert main(["--markdown", "--main"]) == 0
    assert capsys.readouterr().out == markdown_table(main_only=True)


def test_module_runs_as_a_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "signalgen.settings", "--markdown"],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
        timeout=60,
    )
    assert done.stdout == markdown_table()


def test_env_example_names_only_settings() -> None:
    text = (PROJECT_ROOT / ".env.example").read_text(encoding="utf-8")
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))
    unknown = names - set(variable_names()) - set(COMPOSE_ONLY)
    assert not unknown, f"declare in Settings or name in COMPOSE_ONLY: {sorted(unknown)}"
    assert set(COMPOSE_ONLY) <= names
