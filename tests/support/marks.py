"""Marks shared by whole test modules."""

from __future__ import annotations

import pytest


def fault_suite_marks(timeout: int) -> list[pytest.MarkDecorator]:
    """A fault-injection module's `pytestmark`: real services, slow, `timeout` s per test, and
    Celery's pending-deprecation warning (its workers' configuration draws it) ignored.

    `make test` runs the `faults` tests in a phase of their own, two at a time: each scenario
    has its own broker (a locked Redis db, its own redis-server or RabbitMQ vhost) and its own
    PostgreSQL database, so two never meet. A scenario that stops a shared service is also
    marked `serial`, and runs alone after them."""
    return [
        pytest.mark.faults,
        pytest.mark.integration,
        pytest.mark.slow,
        pytest.mark.timeout(timeout),
        pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning"),
    ]
