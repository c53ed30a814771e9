"""The fault suite's summary: the table of every scenario run in this session."""

from __future__ import annotations

from typing import Any

from tests.faults import harness


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if harness.RESULTS:
        terminalreporter.write_sep("=", "fault suite")
        terminalreporter.write_line(harness.table(harness.RESULTS))
        for result in harness.RESULTS:
            if result.notes:
                terminalreporter.write_line(f"{result.fault}: {result.notes}")
