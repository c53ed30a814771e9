"""Per-process dispatcher resources, built on first use (each prefork child builds its own)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from dispatcher.store import (
    IndexCache,
    load_signal_pipelines,
    redis_change_reader,
    redis_version_reader,
    signal_pipelines_fingerprint,
)
from signalgen.settings import Settings, get_settings
from signalgen.storage import Database, get_database

__all__ = ["DispatcherResources", "build", "get_resources", "warm_up"]


@dataclass
class DispatcherResources:
    settings: Settings
    db: Database
    index: IndexCache


def _watchlist(settings: Settings) -> tuple[str, ...]:
    from signalgen.config import load_watchlist

    return tuple(load_watchlist(settings.watchlist_config_path).tickers)


def build() -> DispatcherResources:
    settings = get_settings()
    db = get_database(settings.database_url)
    index = IndexCache(
        load=lambda: load_signal_pipelines(db),
        load_some=lambda ids: load_signal_pipelines(db, ids),
        read_version=redis_version_reader(settings.effective_redis_url),
        read_changes=redis_change_reader(settings.effective_redis_url),
        fingerprint=lambda: signal_pipelines_fingerprint(db),
        watchlist=lambda: _watchlist(settings),
        check_interval=settings.pipeline_index_check_seconds,
        max_age=settings.pipeline_index_max_age_seconds,
    )
    return DispatcherResources(settings, db, index)


_resources: dict[int, DispatcherResources] = {}
_lock = threading.Lock()


def get_resources() -> DispatcherResources:
    pid = os.getpid()
    with _lock:
        resources = _resources.get(pid)
        if resources is None:
            resources = _resources[pid] = build()
        return resources


def warm_up() -> DispatcherResources:
    """Build this process's resources now rather than on its first signal: one pooled database
    connection opened, the match index loaded. Measured (bench/dispatch.py, 100 signals/s): a
    worker taking its first signals cold showed publish → execute of 200-380 ms for the first
    half second, every slow start of the run. Raises what the database or Redis raise."""
    from sqlalchemy import text

    # The hot path's modules, imported here and not inside the first task.
    import dispatcher.claims
    import dispatcher.executors
    import dispatcher.fanout
    import dispatcher.intake
    import dispatcher.service

    resources = get_resources()
    with resources.db.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    dispatcher.service.rehearse(resources.db, resources.index.prime())
    return resources
