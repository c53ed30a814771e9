"""Logs a person can read: text on a terminal (JSON otherwise), Celery's per-task lines with the
task's name and id but never its body, and one line at most for the schema at start-up."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from signalgen.logs import JsonFormatter, TextFormatter, configure_logging, resolve_format
from signalgen.settings import Settings

BODY = {"signal_id": "x" * 36, "metadata": {"blob": "y" * 1500}}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_on_a_terminal_and_json_otherwise() -> None:
    assert Settings().log_format == "auto"
    assert resolve_format("auto", Tty()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", Tty()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"


def test_configure_logging_follows_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        for stream, formatter in ((Tty(), TextFormatter), (io.StringIO(), JsonFormatter)):
            monkeypatch.setattr("sys.stdout", stream)
            configure_logging("INFO")
            assert isinstance(root.handlers[0].formatter, formatter)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def celery_record(logger: str, template: str, data: dict[str, object]) -> logging.LogRecord:
    record = logging.LogRecord(logger, logging.INFO, __file__, 1, template, (data,), None)
    record.data = data
    return record


RECEIVED = celery_record(
    "celery.worker.strategy",
    "Task %(name)s[%(id)s] received",
    {"id": "abc-1", "name": "signals.dispatch", "args": repr([BODY]), "kwargs": "{}", "eta": None},
)
SUCCEEDED = celery_record(
    "celery.app.trace",
    "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
    {
        "id": "abc-1",
        "name": "signals.dispatch",
        "runtime": 0.0123456,
        "return_value": repr(BODY),
        "args": repr([BODY]),
        "kwargs": "{}",
    },
)


def test_celery_task_lines_carry_name_and_id_not_the_body() -> None:
    received = json.loads(JsonFormatter().format(RECEIVED))
    assert received["event"] == "task_received"
    assert (received["task"], received["task_id"]) == ("signals.dispatch", "abc-1")
    succeeded = json.loads(JsonFormatter().format(SUCCEEDED))
    assert succeeded["event"] == "task_succeeded" and succeeded["runtime_seconds"] == 0.0123
    for record in (RECEIVED, SUCCEEDED):
        for formatter in (JsonFormatter(), TextFormatter()):
            line = formatter.format(record)
            assert "y" * 50 not in line and len(line) < 250, line
    text = TextFormatter().format(SUCCEEDED)
    assert "task_succeeded task=signals.dispatch task_id=abc-1 runtime_seconds=0.0123" in text


def test_a_failed_task_keeps_its_reason() -> None:
    failed = celery_record(
        "celery.app.trace",
        "Task %(name)s[%(id)s] %(description)s: %(exc)s",
        {
            "id": "abc-2",
            "name": "pipelines.execute",
            "description": "raised unexpected",
            "exc": "ValueError('boom')",
            "args": repr([BODY]),
            "kwargs": "{}",
            "traceback": "...",
        },
    )
    line = json.loads(JsonFormatter().format(failed))
    assert line["event"] == "task_failed" and line["reason"] == "ValueError('boom')"
    assert "args" not in line and "y" * 50 not in json.dumps(line)


def test_other_records_are_unchanged() -> None:
    record = logging.LogRecord("celery.app.trace", logging.INFO, __file__, 1, "plain", (), None)
    assert json.loads(JsonFormatter().format(record))["event"] == "plain"


def test_migrating_an_empty_database_logs_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from signalgen.storage import Database
    from signalgen.storage.engine import migrate

    database = Database(f"sqlite:///{tmp_path / 'quiet.db'}")
    try:
        with caplog.at_level(logging.DEBUG):
            outcome = migrate(database)
        lines = [r for r in caplog.records if r.levelno >= logging.INFO]
        assert [r.getMessage() for r in lines] == ["database_schema_migrated"], [
            r.getMessage() for r in lines
        ]
        assert outcome.before is None and outcome.after is not None
        assert outcome.describe() == f"database schema created at revision {outcome.after}"
        caplog.clear()
        with caplog.at_level(logging.INFO):
            again = migrate(database)
        assert not [r for r in caplog.records if r.levelno >= logging.INFO]
        assert not again.changed
    finally:
        database.dispose()
