"""Outbound policy for executors (being written: webhook networks, Celery allowlist)."""

from __future__ import annotations

from typing import Any


def check_executor(executor: Any) -> None:
    """Refused unless the executor reaches only what the operator allows."""
