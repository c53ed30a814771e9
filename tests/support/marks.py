"""Marks shared by whole test modules."""

from __future__ import annotations

import pytest


def fault_suite_marks(timeout: int) -> list[pytest.MarkDecorator]:
    """A fault-injection module's `pytestmark`: real services, serial (it stops them), slow,
    `timeout` s per test, and Celery's pending-deprecation warning (its workers' configuration
    draws it) ignored."""
    return [
        pytest.mark.faults,
        pytest.mark.serial,
        pytest.mark.integration,
        pytest.mark.slow,
        pytest.mark.timeout(timeout),
        pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning"),
    ]
