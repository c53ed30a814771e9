"""Alembic kept quiet, for the engine's `migrate` and the migrations package alike: a module of
its own, below both, so neither imports the other to get it (and Alembic is not imported)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_alembic() -> Iterator[None]:
    """Alembic's INFO lines (plugins, context impl, DDL mode, one per revision) kept out of the
    log while inside: `migrate` reports what changed in one line of its own."""
    alembic_logger = logging.getLogger("alembic")
    previous = alembic_logger.level
    if alembic_logger.getEffectiveLevel() < logging.WARNING:
        alembic_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        alembic_logger.setLevel(previous)
