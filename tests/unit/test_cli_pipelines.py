"""`signalgen pipelines ...` and `signalgen signals ...` on SQLite: errors name the field, an
import is all or nothing, export round-trips, every write bumps the index version."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from dispatcher import service
from dispatcher.intake import envelope_for_payload
from dispatcher.matching import MatchIndex
from dispatcher.store import load_signal_scanners
from signalgen.interfaces.cli import main
from signalgen.storage import Database
from signalgen.storage.models import Pipeline
from tests.support.claims import signal_payload

SECRET = "0123456789abcdef-secret"


@pytest.fixture
def cli(sqlite_db: Database, monkeypatch: pytest.MonkeyPatch) -> tuple[CliRunner, list[int]]:
    bumps: list[int] = []
    monkeypatch.setattr("signalgen.interfaces.cli.storage.open_database", lambda **_: sqlite_db)
    monkeypatch.setattr("dispatcher.store.bump_version", lambda *a, **k: bumps.append(1))
    return CliRunner(), bumps


def run(runner: CliRunner, *args: str, input: str | None = None) -> Any:
    return runner.invoke(main, list(args), input=input, catch_exceptions=False)


def count(db: Database) -> int:
    with db.session() as session:
        return session.execute(select(func.count()).select_from(Pipeline)).scalar_one()


def test_add_with_options_then_list_show_disable_remove(
    cli: tuple[CliRunner, list[int]], sqlite_db: Database
) -> None:
    runner, bumps = cli
    result = run(
        runner,
        "pipelines",
        "add",
        "--owner",
        "u1",
        "--name",
        "gc",
        "--tickers",
        "AAPL,MSFT",
        "--types",
        "golden_cross",
        "--bias",
        "BULLISH",
        "--min-confidence",
        "0.6",
        "--executor",
        "webhook",
        "--url",
        "https://127.0.0.1/h",  # the suite allows loopback receivers (conftest)
        "--secret",
        SECRET,
    )
    assert result.exit_code == 0, result.output
    pipeline_id = result.stdout.strip()  # stderr: a note that no users exist yet
    uuid.UUID(pipeline_id)
    listed = run(runner, "pipelines", "list", "--json")
    [item] = [json.loads(line) for line in listed.output.splitlines()]
    assert item["id"] == pipeline_id and item["trigger"]["tickers"] == ["AAPL", "MSFT"]
    shown = run(runner, "pipelines", "show", pipeline_id)
    assert SECRET not in shown.output and '"***"' in shown.output
    assert run(runner, "pipelines", "disable", pipeline_id).exit_code == 0
    assert load_signal_scanners(sqlite_db) == []
    assert run(runner, "pipelines", "enable", pipeline_id).exit_code == 0
    assert len(load_signal_scanners(sqlite_db)) == 1
    assert run(runner, "pipelines", "remove", "--yes", pipeline_id).exit_code == 0
    assert count(sqlite_db) == 0
    assert len(bumps) == 4


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--executor", "carrier-pigeon", "--tickers", "AAPL"], "executor:"),
        (["--trigger", "periodic", "--crontab", "61 * * * *"], "schedule.crontab:"),
        (
            [
                "--executor",
                "webhook",
                "--url",
                "ftp://x/y",
                "--secret",
                SECRET,
                "--tickers",
                "AAPL",
            ],
            "executor.url:",
        ),
        (["--tickers", "aapl"], "scanner.tickers.0:"),
        ([], "scanner: required"),
    ],
)
def test_add_bad_input_names_the_field(
    cli: tuple[CliRunner, list[int]], sqlite_db: Database, args: list[str], field: str
) -> None:
    runner, bumps = cli
    result = runner.invoke(main, ["pipelines", "add", "--owner", "u", "--name", "n", *args])
    assert result.exit_code != 0
    assert field in result.output, result.output
    assert count(sqlite_db) == 0 and bumps == []


def test_import_is_all_or_nothing_and_export_round_trips(
    cli: tuple[CliRunner, list[int]], sqlite_db: Database, tmp_path: Path
) -> None:
    runner, _ = cli
    good = [
        {"owner": "u", "name": f"p{n}", "trigger_mode": "signal", "scanner": {"tickers": ["AAPL"]}}
        for n in range(3)
    ]
    bad = [
        *good,
        {"owner": "u", "name": "bad", "trigger_mode": "periodic", "schedule": {"crontab": "* * *"}},
    ]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = runner.invoke(main, ["pipelines", "import", str(path)])
    assert result.exit_code != 0 and "pipelines[3].schedule.crontab:" in result.output
    assert count(sqlite_db) == 0
    path.write_text("[{")
    result = runner.invoke(main, ["pipelines", "import", str(path)])
    assert result.exit_code != 0 and "not valid JSON" in result.output
    path.write_text(json.dumps(good))
    assert "3 created" in run(runner, "pipelines", "import", str(path)).output
    exported = json.loads(run(runner, "pipelines", "export").output)
    assert len(exported) == 3 and all("id" in item for item in exported)
    exported[0]["enabled"] = False
    path.write_text(json.dumps(exported))
    assert "0 created, 3 updated" in run(runner, "pipelines", "import", str(path)).output
    assert count(sqlite_db) == 3
    assert len(load_signal_scanners(sqlite_db)) == 2


def test_signals_list_and_show_after_a_dispatch(
    cli: tuple[CliRunner, list[int]], sqlite_db: Database
) -> None:
    runner, _ = cli
    run(runner, "pipelines", "add", "--owner", "u", "--name", "any-aapl", "--tickers", "AAPL")
    now = datetime(2025, 1, 2, tzinfo=UTC)
    payload = signal_payload(now, source="ext")
    lonely = json.loads(payload) | {"signal_id": str(uuid.uuid4()), "tickers": ["ZZZ"]}
    index = MatchIndex.build(load_signal_scanners(sqlite_db))
    enqueued: list[Any] = []
    service.dispatch(
        envelope_for_payload(payload, published_at=now.timestamp()),
        db=sqlite_db,
        index=index,
        enqueue=enqueued.extend,
    )
    service.dispatch(
        envelope_for_payload(json.dumps(lonely)), db=sqlite_db, index=index, enqueue=enqueued.extend
    )
    assert len(enqueued) == 1
    rows = [
        json.loads(line)
        for line in run(runner, "signals", "list", "--json", "--source", "ext").output.splitlines()
    ]
    assert {r["dispatch"] for r in rows} == {"dispatched", "unmatched"}
    only = run(runner, "signals", "list", "--json", "--ticker", "ZZZ").output.splitlines()
    assert [json.loads(line)["signal_id"] for line in only] == [lonely["signal_id"]]
    shown = json.loads(run(runner, "signals", "show", json.loads(payload)["signal_id"]).output)
    assert shown["dispatch"]["matched"] == 1
    assert shown["matched_pipelines"][0]["status"] == "enqueued"


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_signals_list_filters_on_either_database(
    backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`signals list` reads through the API's query (`queries.list_signals`): the same filters,
    times in UTC whatever the driver returns, newest first."""
    from signalgen.storage.models import SignalRecord, SignalTicker

    db: Database = request.getfixturevalue("sqlite_db" if backend == "sqlite" else "pg_db")
    monkeypatch.setattr("signalgen.interfaces.cli.storage.open_database", lambda **_: db)
    base = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    made = []
    with db.session() as session:
        for n, (ticker, status) in enumerate(
            [("AAPL", "dispatched"), ("MSFT", "unmatched"), ("AAPL", "pending")]
        ):
            signal_id, created = uuid.uuid4(), base.replace(hour=14 + n)
            made.append(str(signal_id))
            session.add(
                SignalRecord(
                    signal_id=signal_id,
                    signal_type="golden_cross",
                    source="gc" if n < 2 else "ext",
                    tickers=[ticker],
                    event_time=created,
                    created_at=created,
                    payload="{}",
                    routing_key=f"signal.golden_cross.{ticker}",
                    dispatch_status=status,
                    matched_count=None if status == "pending" else n,
                )
            )
            session.flush()
            session.add(SignalTicker(ticker=ticker, created_at=created, signal_id=signal_id))
    runner = CliRunner()

    def listed(*args: str) -> list[dict[str, Any]]:
        result = run(runner, "signals", "list", "--json", *args)
        return [json.loads(line) for line in result.output.splitlines()]

    every = listed()
    assert [row["signal_id"] for row in every] == made[::-1]
    assert every[-1] == {
        "signal_id": made[0],
        "created_at": "2026-03-02T14:30:00+00:00",
        "type": "golden_cross",
        "tickers": ["AAPL"],
        "source": "gc",
        "dispatch": "dispatched",
        "matched": 0,
    }
    assert [r["signal_id"] for r in listed("--ticker", "aapl")] == [made[2], made[0]]
    assert [r["signal_id"] for r in listed("--status", "unmatched")] == [made[1]]
    assert [r["signal_id"] for r in listed("--source", "gc", "--limit", "1")] == [made[1]]
    window = ("--since", "2026-03-02T15:00:00+00:00", "--until", "2026-03-02T17:00:00+00:00")
    assert [r["signal_id"] for r in listed(*window)] == [made[2], made[1]]
    assert [r["signal_id"] for r in listed("--ticker", "AAPL", *window)] == [made[2]]
    text = run(runner, "signals", "list", "--status", "pending")
    assert text.stdout.split()[1:3] == ["2026-03-02T16:30:00+00:00", "golden_cross"]
    assert text.stdout.rstrip().endswith("matched=-")
