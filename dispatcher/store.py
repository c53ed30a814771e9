"""Pipelines in the database, the index version, and each worker's cached match index.

Every pipeline write goes through this module, which, after the transaction commits, bumps a
version counter in Redis (`PIPELINES_VERSION_KEY`) and logs the ids it changed under the new
version (`PIPELINES_CHANGES_KEY`, `dispatcher.changelog`) in one atomic step. Each worker
process keeps one `MatchIndex` (`IndexCache`) and checks the counter at most every
`check_interval` seconds (one GET); when it moved, the worker reloads only the pipelines the
log names and patches its index. A gap the log does not cover means a full rebuild. Every
`max_age` seconds one aggregate query verifies the index against the database, which bounds
staleness if a bump was lost (Redis down during a write); a pipeline edited by hand in SQL must
have its `updated_at` set (or the counter INCRed by hand, which makes every worker rebuild).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from pydantic import ValidationError
from sqlalchemy import BigInteger, cast, delete, func, select, update

from dispatcher import changelog
from dispatcher.admission import Refused, admit_spec, admit_totals
from dispatcher.matching import MatchIndex
from schemas.pipeline import PipelineSpec, Scanner
from signalgen.logs import log_event
from signalgen.storage import Database
from signalgen.storage.models import Pipeline

logger = logging.getLogger("dispatcher.store")

PIPELINES_VERSION_KEY = "signalgen:pipelines:version"


class PipelineNotFound(LookupError):
    pass


class InvalidImport(ValueError):
    """A pipelines import refused as a whole; the message names the item and field."""


# -- conversion ---------------------------------------------------------------------------------


def spec_to_row(spec: PipelineSpec) -> dict[str, Any]:
    """The row's columns; a webhook secret is encrypted (`signalgen.crypto`). Refused, naming
    `executor.secret`, when there is no key to encrypt it with (never stored in plain text)."""
    config = spec.executor_config()
    if "secret" in config:
        from signalgen.crypto import SecretKeyError, default_box

        try:
            config = default_box().seal_config(config)
        except SecretKeyError as exc:
            raise Refused("executor.secret", str(exc)) from None
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
        "executor_config": config,
    }


def row_to_spec(row: Pipeline) -> PipelineSpec:
    """The stored pipeline, its webhook secret decrypted (`signalgen.crypto.SecretKeyError`,
    naming SECRETS_KEYS, when no key decrypts it)."""
    config = dict(row.executor_config or {})
    if "secret" in config:
        from signalgen.crypto import default_box

        config = default_box().open_config(config)
    return PipelineSpec.model_validate(
        {
            "id": row.id,
            "owner": row.owner,
            "name": row.name,
            "enabled": row.enabled,
            "trigger_mode": row.trigger_mode,
            "scanner": row.scanner,
            "schedule": row.schedule,
            "executor": {"kind": row.executor, **config},
        }
    )


def export_dict(spec: PipelineSpec, *, include_secrets: bool = False) -> dict[str, Any]:
    """JSON-ready, importable as is. A webhook secret is left out unless `include_secrets`
    (an import of an existing pipeline without one keeps the stored secret)."""
    data = spec.model_dump(mode="json", exclude_none=True)
    if not include_secrets:
        data["executor"].pop("secret", None)
    return data


# -- version counter ----------------------------------------------------------------------------

#: Sorted set: the ids each version changed (`dispatcher.changelog`), the version as score.
PIPELINES_CHANGES_KEY = "signalgen:pipelines:changes"

#: INCR the version and log what it changed under the new version, trimmed to the last
#: ARGV[2] versions: one atomic step, so a version never exists without its log entry.
BUMP_SCRIPT = """
local version = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], version, version .. ':' .. ARGV[1])
local size = redis.call('ZCARD', KEYS[2])
local keep = tonumber(ARGV[2])
if size > keep then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, size - keep - 1) end
return version
"""


def _redis(redis_url: str | None) -> Any:
    import redis

    if redis_url is None:
        from signalgen.settings import get_settings

        redis_url = get_settings().effective_redis_url
    return redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)


def bump_version(
    redis_url: str | None = None, changed: Collection[uuid.UUID] | None = None
) -> int | None:
    """Tell every worker that the pipelines `changed` (None: unknown, maybe all) were written:
    their indexes reload just those (`IndexCache`). Logged, not raised, if Redis is unreachable
    (workers then see the change within their `max_age` verification)."""
    try:
        client = _redis(redis_url)
        try:
            return int(
                client.eval(
                    BUMP_SCRIPT,
                    2,
                    PIPELINES_VERSION_KEY,
                    PIPELINES_CHANGES_KEY,
                    changelog.encode(changed),
                    changelog.LOG_LENGTH,
                )
            )
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


def _import_ids(specs: Sequence[PipelineSpec]) -> list[uuid.UUID] | None:
    """The ids an import changed, when every spec names its id (else None: rebuild)."""
    ids = [spec.id for spec in specs if spec.id is not None]
    return ids if len(ids) == len(specs) else None


# -- writes -------------------------------------------------------------------------------------


def add_pipeline(db: Database, spec: PipelineSpec, *, redis_url: str | None = None) -> uuid.UUID:
    pipeline_id = spec.id or uuid.uuid4()
    with db.session() as session:
        admit_spec(session, spec)
        session.add(Pipeline(id=pipeline_id, **spec_to_row(spec)))
        session.flush()
        admit_totals(session, [spec.owner])
    bump_version(redis_url, [pipeline_id])
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
    bump_version(redis_url, _import_ids(specs))
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
    bump_version(redis_url, [pipeline_id])


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
    bump_version(redis_url, [pipeline_id])


def remove_pipeline(db: Database, pipeline_id: uuid.UUID, *, redis_url: str | None = None) -> None:
    with db.session() as session:
        result = session.execute(delete(Pipeline).where(Pipeline.id == pipeline_id))
        if not result.rowcount:  # type: ignore[attr-defined]
            raise PipelineNotFound(str(pipeline_id))
    bump_version(redis_url, [pipeline_id])


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


class IndexedPipeline(NamedTuple):
    """One enabled `signal` pipeline as an index holds it. `scanner` is None when the stored
    scanner no longer validates (logged; it cannot be matched safely, so it is not indexed)."""

    id: Hashable  # a uuid.UUID from the database
    scanner: Scanner | None
    updated_at: datetime | None = None


def load_signal_pipelines(
    db: Database, ids: Collection[uuid.UUID] | None = None
) -> list[IndexedPipeline]:
    """Every enabled `signal` pipeline, or those among `ids` (one query: `id IN (...)`)."""
    statement = select(Pipeline.id, Pipeline.scanner, Pipeline.updated_at).where(
        Pipeline.trigger_mode == "signal", Pipeline.enabled.is_(True)
    )
    if ids is not None:
        if not ids:
            return []
        statement = statement.where(Pipeline.id.in_(list(ids)))
    out: list[IndexedPipeline] = []
    with db.session() as session:
        for pipeline_id, scanner, updated_at in session.execute(statement):
            try:
                parsed: Scanner | None = Scanner.model_validate(scanner)
            except ValidationError as exc:
                parsed = None
                log_event(
                    logger,
                    "pipeline_scanner_invalid",
                    logging.ERROR,
                    pipeline_id=str(pipeline_id),
                    reason=str(exc).splitlines()[0],
                )
            out.append(IndexedPipeline(pipeline_id, parsed, updated_at))
    return out


def load_signal_scanners(db: Database) -> list[tuple[uuid.UUID, Scanner]]:
    """(id, scanner) of every enabled `signal` pipeline. A row that no longer validates is
    logged and left out (it cannot be matched safely)."""
    return [(cast_id(p.id), p.scanner) for p in load_signal_pipelines(db) if p.scanner is not None]


def cast_id(pipeline_id: Hashable) -> uuid.UUID:
    """An index entry's id as the UUID the database gave it."""
    assert isinstance(pipeline_id, uuid.UUID)
    return pipeline_id


def stamp(moment: datetime | None) -> int:
    """`updated_at` in whole microseconds since the epoch (0 for None): summed exactly."""
    if moment is None:
        return 0
    return (moment - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def signal_pipelines_fingerprint(db: Database) -> tuple[int, int]:
    """(count, sum of `stamp(updated_at)`) of the enabled `signal` pipelines: what an index
    built from the database now would hold, in one aggregate query. Every write through this
    module sets `updated_at`, so a write an index missed changes the sum (or the count)."""
    where = (Pipeline.trigger_mode == "signal", Pipeline.enabled.is_(True))
    with db.session() as session:
        if db.dialect == "postgresql":
            micros = cast(func.extract("epoch", Pipeline.updated_at) * 1_000_000, BigInteger)
            count, total = session.execute(
                select(func.count(), func.coalesce(func.sum(micros), 0)).where(*where)
            ).one()
            return int(count), int(total)
        stamps = session.execute(select(Pipeline.updated_at).where(*where)).scalars().all()
        return len(stamps), sum(stamp(moment) for moment in stamps)


# -- the per-process index ----------------------------------------------------------------------


#: What a loader yields: an IndexedPipeline, or a plain (id, scanner) pair.
Loaded = IndexedPipeline | tuple[Hashable, Scanner]


def _indexed(item: Loaded) -> IndexedPipeline:
    return item if isinstance(item, IndexedPipeline) else IndexedPipeline(item[0], item[1])


class IndexCache:
    """A worker process's match index, kept current by patches, not rebuilds.

    Every `check_interval` seconds (on use) it reads the version counter (one GET). When the
    version moved and the change log covers every version in between (`read_changes`), it
    loads just the changed pipelines (`load_some`, one `id IN (...)` query) and patches the
    index (`MatchIndex.patched`): a write costs the next dispatch O(that pipeline), not O(all).
    When the log does not cover the gap (trimmed, Redis flushed, a bump by hand), it rebuilds
    from `load`.

    Every `max_age` seconds it verifies the index against the database with one aggregate
    query (`fingerprint`: count and summed `updated_at` of the enabled signal pipelines),
    re-reading the version around it: a mismatch while the version stood still (a write whose
    bump was lost, Redis down) is confirmed at the next check and then rebuilds. Without a
    `fingerprint` the index is simply rebuilt every `max_age` (the behaviour before patches).
    Staleness: a write is matched within `check_interval` of its bump, within about `max_age`
    + `check_interval` if its bump was lost.
    """

    def __init__(
        self,
        *,
        load: Callable[[], Iterable[Loaded]],
        read_version: Callable[[], object],
        watchlist: Callable[[], Iterable[str]] = tuple,
        check_interval: float = 1.0,
        max_age: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        load_some: Callable[[Collection[uuid.UUID]], Iterable[Loaded]] | None = None,
        read_changes: Callable[[int, int], set[uuid.UUID] | None] | None = None,
        fingerprint: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self._load = load
        self._read_version = read_version
        self._watchlist = watchlist
        self.check_interval = check_interval
        self.max_age = max_age
        self._clock = clock
        self._load_some = load_some
        self._read_changes = read_changes
        self._fingerprint = fingerprint
        self._index: MatchIndex | None = None
        self._entries: dict[Hashable, IndexedPipeline] = {}
        self._stamp_sum = 0
        self._checked_at = 0.0
        self._built_at = 0.0
        self._verified_at = 0.0
        self._suspect = False
        self._lock = threading.Lock()
        #: Full builds from the database, and patches of changed pipelines, so far.
        self.rebuilds = 0
        self.patches = 0

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
            if self._index is not None and now - self._checked_at < self.check_interval:
                return self._index  # another thread checked while this one waited
            self._checked_at = now
            version = self._version()
            if self._index is None:
                self._rebuild(version, now, "start")
            elif version != self._index.version and not self._patch(self._index, version):
                self._rebuild(version, now, "gap")
            if now - self._verified_at >= self.max_age or self._suspect:
                self._verify(now)
            assert self._index is not None
            return self._index

    def _version(self) -> object:
        """The counter; unreadable: the index's own version (keep it; `max_age` verifies)."""
        try:
            return self._read_version()
        except Exception as exc:
            log_event(
                logger,
                "pipelines_version_unreadable",
                logging.WARNING,
                reason=f"{type(exc).__name__}: {exc}",
            )
            return self._index.version if self._index is not None else None

    def _rebuild(self, version: object, now: float, reason: str) -> None:
        # Version first, then rows: a write landing in between bumps past `version`, so the
        # next check loads it again; nothing is missed.
        entries: dict[Hashable, IndexedPipeline] = {}
        for item in self._load():
            row = _indexed(item)
            entries[row.id] = row
        self._index = MatchIndex.build(
            ((row.id, row.scanner) for row in entries.values() if row.scanner is not None),
            watchlist=self._watchlist(),
            version=version,
        )
        self._entries = entries
        self._stamp_sum = sum(stamp(row.updated_at) for row in entries.values())
        self._built_at = self._verified_at = now
        self._suspect = False
        self.rebuilds += 1
        log_event(
            logger,
            "pipeline_index_built",
            logging.INFO,
            pipelines=self._index.size,
            version=str(version),
            reason=reason,
        )

    def _patch(self, index: MatchIndex, version: object) -> bool:
        """Apply the changes between the index's version and `version`; False: not covered."""
        if self._load_some is None or self._read_changes is None:
            return False
        if not isinstance(version, int) or not isinstance(index.version, int):
            return False
        try:
            changed = self._read_changes(index.version, version)
        except Exception as exc:
            log_event(
                logger,
                "pipelines_changes_unreadable",
                logging.WARNING,
                reason=f"{type(exc).__name__}: {exc}",
            )
            return True  # keep the index as it is; the next check tries again
        if changed is None:
            return False
        fresh: dict[Hashable, IndexedPipeline] = {}
        for item in self._load_some(changed):
            row = _indexed(item)
            fresh[row.id] = row
        removed: list[tuple[Hashable, Scanner]] = []
        for pipeline_id in changed:
            old = self._entries.pop(pipeline_id, None)
            if old is not None:
                self._stamp_sum -= stamp(old.updated_at)
                if old.scanner is not None:
                    removed.append((pipeline_id, old.scanner))
        for row in fresh.values():
            self._entries[row.id] = row
            self._stamp_sum += stamp(row.updated_at)
        self._index = index.patched(
            removed,
            [(row.id, row.scanner) for row in fresh.values() if row.scanner is not None],
            version=version,
        )
        self.patches += 1
        log_event(
            logger,
            "pipeline_index_patched",
            logging.DEBUG,
            changed=len(changed),
            pipelines=self._index.size,
            version=str(version),
        )
        return True

    def _verify(self, now: float) -> None:
        """Compare the index with the database (see the class docstring); refresh the
        watchlist. Without a fingerprint: rebuild."""
        self._verified_at = now
        index = self._index
        assert index is not None
        if self._fingerprint is None:
            if now - self._built_at >= self.max_age:
                self._rebuild(index.version, now, "max_age")
            return
        watchlist = frozenset(self._watchlist())
        if watchlist != index.watchlist:
            self._index = index = index.with_watchlist(watchlist)
        before = self._version()
        actual = self._fingerprint()
        after = self._version()
        if actual == (len(self._entries), self._stamp_sum):
            self._suspect = False
            return
        if before != after or before != index.version:
            self._suspect = True  # writes under way: their patches come first; look again
            return
        if self._suspect:
            log_event(
                logger,
                "pipeline_index_drift",
                logging.WARNING,
                indexed=len(self._entries),
                stored=actual[0],
            )
            self._rebuild(index.version, now, "drift")
        else:
            self._suspect = True  # a bump may be on its way: confirm at the next check


def redis_version_reader(redis_url: str | None = None) -> Callable[[], object]:
    client = _redis(redis_url)

    def read() -> object:
        value = client.get(PIPELINES_VERSION_KEY)
        return int(value) if value is not None else 0

    return read


def redis_change_reader(
    redis_url: str | None = None,
) -> Callable[[int, int], set[uuid.UUID] | None]:
    """`read(after, upto)`: the ids versions after+1..upto changed, or None when the log does
    not hold every one of them (the caller rebuilds)."""
    client = _redis(redis_url)

    def read(after: int, upto: int) -> set[uuid.UUID] | None:
        if upto <= after or upto - after > changelog.LOG_LENGTH:
            return None
        entries = client.zrangebyscore(PIPELINES_CHANGES_KEY, f"({after}", upto, withscores=True)
        return changelog.covered_ids(entries, after, upto)

    return read
