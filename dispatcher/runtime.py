"""Per-process dispatcher resources, built on first use (each prefork child builds its own)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from dispatcher.store import (
    IndexCache,
    load_signal_pipelines,
    redis_change_reader,
    redis_version_reader,
    signal_pipelines_fingerprint,
)
from signalgen.db import Database, get_database
from signalgen.settings import Settings, get_settings


class DispatcherSettings(BaseSettings):
    """Dispatcher tuning from the environment (all optional)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    #: A `running` execution older than this is presumed dead and may be taken over. Keep it
    #: above the longest execution (webhook timeout x attempts + back-off).
    execution_lease_seconds: float = Field(
        default=900.0, gt=0, validation_alias="EXECUTION_LEASE_SECONDS"
    )
    #: A claim still `claimed` after this is re-enqueued by the periodic sweep.
    claimed_grace_seconds: float = Field(
        default=60.0, gt=0, validation_alias="CLAIMED_GRACE_SECONDS"
    )
    #: How often (at most) a worker reads the pipelines version; a write is matched by every
    #: worker within this of its commit (patched in, `dispatcher.store.IndexCache`).
    index_check_seconds: float = Field(
        default=1.0, gt=0, validation_alias="PIPELINE_INDEX_CHECK_SECONDS"
    )
    #: How often a worker verifies its index against the database (one aggregate query):
    #: the staleness bound for a write whose version bump was lost (Redis down).
    index_max_age_seconds: float = Field(
        default=60.0, gt=0, validation_alias="PIPELINE_INDEX_MAX_AGE_SECONDS"
    )

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.execution_lease_seconds)

    @property
    def claimed_grace(self) -> timedelta:
        return timedelta(seconds=self.claimed_grace_seconds)


@dataclass
class DispatcherResources:
    settings: Settings
    tuning: DispatcherSettings
    db: Database
    index: IndexCache


def _watchlist(settings: Settings) -> tuple[str, ...]:
    from signalgen.config import load_watchlist

    return tuple(load_watchlist(settings.watchlist_config_path).tickers)


def build() -> DispatcherResources:
    settings = get_settings()
    tuning = DispatcherSettings()
    db = get_database(settings.database_url)
    index = IndexCache(
        load=lambda: load_signal_pipelines(db),
        load_some=lambda ids: load_signal_pipelines(db, ids),
        read_version=redis_version_reader(settings.effective_redis_url),
        read_changes=redis_change_reader(settings.effective_redis_url),
        fingerprint=lambda: signal_pipelines_fingerprint(db),
        watchlist=lambda: _watchlist(settings),
        check_interval=tuning.index_check_seconds,
        max_age=tuning.index_max_age_seconds,
    )
    return DispatcherResources(settings, tuning, db, index)


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
