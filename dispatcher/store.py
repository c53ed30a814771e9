"""Pipelines in the database, the index version, and each worker's cached match index.

Every pipeline write goes through this module, which bumps a version counter in Redis
(`PIPELINES_VERSION_KEY`) after the transaction commits. Each worker process keeps one
`MatchIndex` and checks the counter at most every `check_interval` seconds (one GET); a
different value means rebuild. The index is also rebuilt every `max_age` seconds whatever the
counter says, which bounds staleness if a bump was lost (Redis down during a write) or a
pipeline was written by hand.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select, update

from dispatcher.admission import admit_spec, admit_totals
from dispatcher.matching import MatchIndex
from schemas.pipeline import PipelineSpec, Scanner
from signalgen.db import Database
from signalgen.db.models import Pipeline
from signalgen.logs import log_event

logger = logging.getLogger("dispatcher.store")

PIPELINES_VERSION_KEY = "signalgen:pipelines:version"


class PipelineNotFound(LookupError):
    pass


class InvalidImport(ValueError):
    """A pipelines import refused as a whole; the message names the item and field."""


# -- conversion ---------------------------------------------------------------------------------


def spec_to_row(spec: PipelineSpec) -> dict[str, Any]:
    return {
        "owner": spec.owner,
        "name": spec.name,
        "enabled": spec.enabled,
        "trigger_mode": spec.trigger_mode,
        "scanner": spec.scanner.model_dump(mode="json") if spec.scanner else None,
        "schedule": spec.schedule.model_dump(mode="json", exclude_none=True)
        if spec.schedule
        else None,
        "executor": spec.executor.kind,
        "executor_config": spec.executor_config(),
    }


def row_to_spec(row: Pipeline) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "id": row.id,
            "owner": row.owner,
            "name": row.name,
            "enabled": row.enabled,
            "trigger_mode": row.trigger_mode,
            "scanner": row.scanner,
            "schedule": row.schedule,
            "executor": {"kind": row.executor, **(row.executor_config or {})},
        }
    )


def export_dict(spec: PipelineSpec) -> dict[str, Any]:
    """JSON-ready, secrets included (an export is a backup, importable as is)."""
    return spec.model_dump(mode="json", exclude_none=True)


# -- version counter ----------------------------------------------------------------------------


def _redis(redis_url: str | None) -> Any:
    import redis

    if redis_url is None:
        from signalgen.settings import get_settings

        redis_url = get_settings().effective_redis_url
    return redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)


def bump_version(redis_url: str | None = None) -> int | None:
    """Tell every worker to rebuild its index. Logged, not raised, if Redis is unreachable
    (workers then pick the change up within their `max_age`)."""
    try:
        client = _redis(redis_url)
        try:
            return int(client.incr(PIPELINES_VERSION_KEY))
        finally:
            client.close()
    except Exception as exc:
        log_event(
            logger,
            "pipelines_version_bump_failed",
            logging.WARNING,
            reason=f"{type(exc).__name__}: {exc}",
        )
        return None


# -- writes -------------------------------------------------------------------------------------


def add_pipeline(db: Database, spec: PipelineSpec, *, redis_url: str | None = None) -> uuid.UUID:
    pipeline_id = spec.id or uuid.uuid4()
    with db.session() as session:
        admit_spec(session, spec)
        session.add(Pipeline(id=pipeline_id, **spec_to_row(spec)))
        session.flush()
        admit_totals(session, [spec.owner])
    bump_version(redis_url)
    return pipeline_id


def import_specs(
    db: Database, specs: Sequence[PipelineSpec], *, redis_url: str | None = None
) -> tuple[int, int]:
    """Insert, or update by id, every spec in one transaction. Returns (created, updated)."""
    created = updated = 0
    now = datetime.now(UTC)
    with db.session() as session:
        for spec in specs:
            admit_spec(session, spec)
            existing = session.get(Pipeline, spec.id) if spec.id is not None else None
            if existing is None:
                session.add(Pipeline(id=spec.id or uuid.uuid4(), **spec_to_row(spec)))
                created += 1
            else:
                for key, value in spec_to_row(spec).items():
                    setattr(existing, key, value)
                existing.updated_at = now
                updated += 1
        session.flush()
        admit_totals(session, {spec.owner for spec in specs})
    bump_version(redis_url)
    return created, updated


def update_pipeline(
    db: Database, pipeline_id: uuid.UUID, spec: PipelineSpec, *, redis_url: str | None = None
) -> None:
    """Replace an existing pipeline's fields. Never inserts: a pipeline deleted meanwhile stays
    deleted (PipelineNotFound), unlike `import_specs`, which creates what is missing."""
    with db.session() as session:
        admit_spec(session, spec)
        result = session.execute(
            update(Pipeline)
            .where(Pipeline.id == pipeline_id)
            .values(**spec_to_row(spec), updated_at=datetime.now(UTC))
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            raise PipelineNotFound(str(pipeline_id))
        admit_totals(session, [spec.owner])
    bump_version(redis_url)


def parse_import(data: Any) -> list[PipelineSpec]:
    """Validate an import document (a list of pipeline objects, or {"pipelines": [...]}).
    Raises InvalidImport naming `pipelines[i].field` for every problem; nothing is written."""
    from schemas.pipeline import describe_errors

    if isinstance(data, dict) and set(data) == {"pipelines"}:
        data = data["pipelines"]
    if not isinstance(data, list):
        raise InvalidImport(
            "import file must hold a JSON list of pipelines (or an object with a 'pipelines' list)"
        )
    specs: list[PipelineSpec] = []
    problems: list[str] = []
    seen: set[uuid.UUID] = set()
    for index, item in enumerate(data):
        try:
            spec = PipelineSpec.model_validate(item)
        except ValidationError as exc:
            problems.append(describe_errors(exc, prefix=f"pipelines[{index}]."))
            continue
        if spec.id is not None:
            if spec.id in seen:
                problems.append(f"pipelines[{index}].id: {spec.id} appears twice")
            seen.add(spec.id)
        specs.append(spec)
    if problems:
        raise InvalidImport("\n".join(problems))
    return specs


def set_enabled(
    db: Database, pipeline_id: uuid.UUID, enabled: bool, *, redis_url: str | None = None
) -> None:
    with db.session() as session:
        result = session.execute(
            update(Pipeline)
            .where(Pipeline.id == pipeline_id)
            .values(enabled=enabled, updated_at=datetime.now(UTC))
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            raise PipelineNotFound(str(pipeline_id))
    bump_version(redis_url)


def remove_pipeline(db: Database, pipeline_id: uuid.UUID, *, redis_url: str | None = None) -> None:
    with db.session() as session:
        result = session.execute(delete(Pipeline).where(Pipeline.id == pipeline_id))
        if not result.rowcount:  # type: ignore[attr-defined]
            raise PipelineNotFound(str(pipeline_id))
    bump_version(redis_url)


# -- reads --------------------------------------------------------------------------------------


def get_pipeline(db: Database, pipeline_id: uuid.UUID) -> Pipeline:
    with db.session() as session:
        row = session.get(Pipeline, pipeline_id)
    if row is None:
        raise PipelineNotFound(str(pipeline_id))
    return row


def list_pipelines(
    db: Database,
    *,
    owner: str | None = None,
    trigger_mode: str | None = None,
    enabled: bool | None = None,
) -> list[Pipeline]:
    statement = select(Pipeline).order_by(Pipeline.owner, Pipeline.name, Pipeline.id)
    if owner is not None:
        statement = statement.where(Pipeline.owner == owner)
    if trigger_mode is not None:
        statement = statement.where(Pipeline.trigger_mode == trigger_mode)
    if enabled is not None:
        statement = statement.where(Pipeline.enabled == enabled)
    with db.session() as session:
        return list(session.execute(statement).scalars())


def load_signal_scanners(db: Database) -> list[tuple[uuid.UUID, Scanner]]:
    """(id, scanner) of every enabled `signal` pipeline. A row that no longer validates is
    logged and left out (it cannot be matched safely)."""
    statement = select(Pipeline.id, Pipeline.scanner).where(
        Pipeline.trigger_mode == "signal", Pipeline.enabled.is_(True)
    )
    out: list[tuple[uuid.UUID, Scanner]] = []
    with db.session() as session:
        for pipeline_id, scanner in session.execute(statement):
            try:
                out.append((pipeline_id, Scanner.model_validate(scanner)))
            except ValidationError as exc:
                log_event(
                    logger,
                    "pipeline_scanner_invalid",
                    logging.ERROR,
                    pipeline_id=str(pipeline_id),
                    reason=str(exc).splitlines()[0],
                )
    return out


# -- the per-process index ----------------------------------------------------------------------


class IndexCache:
    """A worker process's match index, refreshed when the version counter moves."""

    def __init__(
        self,
        *,
        load: Callable[[], Iterable[tuple[uuid.UUID, Scanner]]],
        read_version: Callable[[], object],
        watchlist: Callable[[], Iterable[str]] = tuple,
        check_interval: float = 1.0,
        max_age: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._read_version = read_version
        self._watchlist = watchlist
        self.check_interval = check_interval
        self.max_age = max_age
        self._clock = clock
        self._index: MatchIndex | None = None
        self._checked_at = 0.0
        self._built_at = 0.0
        self._lock = threading.Lock()
        self.rebuilds = 0

    def prime(self) -> MatchIndex:
        """Build the index now (a worker's warm-up) without counting as a recent check: the
        first real lookup still reads the version, so a pipeline changed in between is seen."""
        index = self.current()
        self._checked_at = float("-inf")
        return index

    def current(self) -> MatchIndex:
        now = self._clock()
        index = self._index
        if index is not None and now - self._checked_at < self.check_interval:
            return index
        with self._lock:
            self._checked_at = now
            try:
                version = self._read_version()
            except Exception as exc:
                log_event(
                    logger,
                    "pipelines_version_unreadable",
                    logging.WARNING,
                    reason=f"{type(exc).__name__}: {exc}",
                )
                # Unknown: keep what we have; `max_age` still rebuilds it from the database.
                version = self._index.version if self._index is not None else None
            if (
                self._index is None
                or version != self._index.version
                or now - self._built_at >= self.max_age
            ):
                # Version first, then rows: a write landing in between bumps past `version`,
                # so the next check rebuilds again; nothing is missed.
                self._index = MatchIndex.build(
                    self._load(), watchlist=self._watchlist(), version=version
                )
                self._built_at = now
                self.rebuilds += 1
                log_event(
                    logger,
                    "pipeline_index_built",
                    logging.INFO,
                    pipelines=self._index.size,
                    version=str(version),
                )
            return self._index


def redis_version_reader(redis_url: str | None = None) -> Callable[[], object]:
    client = _redis(redis_url)

    def read() -> object:
        value = client.get(PIPELINES_VERSION_KEY)
        return int(value) if value is not None else 0

    return read
