"""Pipeline writes: an update never resurrects a pipeline deleted meanwhile; each write is
patched into every worker's index (change log in Redis), gaps and lost bumps rebuild it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from dispatcher import changelog, store
from dispatcher.matching import MatchIndex
from schemas.pipeline import PipelineSpec, Scanner
from schemas.signal import Signal, SignalType
from signalgen.storage import Database

NO_REDIS = "redis://127.0.0.1:1/0"  # bumps fail fast and are only logged (a lost bump)


def spec(name: str = "p") -> PipelineSpec:
    return PipelineSpec.model_validate(
        {"owner": "alice", "name": name, "trigger_mode": "signal", "scanner": {"tickers": ["AAPL"]}}
    )


def test_update_changes_an_existing_pipeline(sqlite_db: Database) -> None:
    pipeline_id = store.add_pipeline(sqlite_db, spec("before"))
    store.update_pipeline(sqlite_db, pipeline_id, spec("after"))
    assert store.get_pipeline(sqlite_db, pipeline_id).name == "after"


def test_update_of_a_deleted_pipeline_raises_and_does_not_recreate_it(sqlite_db: Database) -> None:
    pipeline_id = store.add_pipeline(sqlite_db, spec())
    store.remove_pipeline(sqlite_db, pipeline_id)
    with pytest.raises(store.PipelineNotFound):
        store.update_pipeline(sqlite_db, pipeline_id, spec("patched"))
    with pytest.raises(store.PipelineNotFound):
        store.get_pipeline(sqlite_db, pipeline_id)


# -- the change log (pure) ----------------------------------------------------------------------


def test_change_log_covers_a_gap_only_when_every_version_is_there() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    entries = [(f"4:{a.hex}", 4.0), (f"5:{a.hex},{b.hex}", 5.0), ("6:", 6.0)]
    assert changelog.covered_ids(entries, 3, 6) == {a, b}
    assert changelog.covered_ids(entries, 4, 5) == {a, b}  # entries outside are ignored
    assert changelog.covered_ids(entries, 2, 6) is None  # version 3 trimmed away
    assert changelog.covered_ids(entries[::2], 3, 6) is None  # version 5 missing
    assert changelog.covered_ids([*entries, ("7:*", 7.0)], 3, 7) is None  # "everything"
    assert changelog.covered_ids(entries, 6, 6) is None and changelog.covered_ids([], 6, 5) is None
    assert changelog.covered_ids([("x:1", 4.0)], 3, 4) is None
    assert changelog.covered_ids([(b"4:zz", 4.0)], 3, 4) is None


def test_change_log_entries_are_bounded() -> None:
    ids = [uuid.uuid4() for _ in range(changelog.MAX_IDS_PER_ENTRY + 1)]
    assert changelog.encode(ids) == changelog.EVERYTHING
    assert changelog.encode(None) == changelog.EVERYTHING
    assert changelog.encode(ids[:2]) == ",".join(sorted(i.hex for i in ids[:2]))


# -- the worker's index, patched from real Redis and the database ----------------------------------

SIGNAL_TIME = datetime(2025, 1, 2, tzinfo=UTC)


def signal(ticker: str) -> Signal:
    return Signal(
        signal_id=uuid.uuid4(),
        signal_type=SignalType.GOLDEN_CROSS,
        tickers=(ticker,),
        bias={},
        timestamp=SIGNAL_TIME,
        event_time=SIGNAL_TIME,
        source="test",
    )


def signal_spec(name: str, tickers: list[str], owner: str = "alice") -> PipelineSpec:
    return PipelineSpec.model_validate(
        {"owner": owner, "name": name, "trigger_mode": "signal", "scanner": {"tickers": tickers}}
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db(request: pytest.FixtureRequest) -> Database:
    name = "sqlite_db" if request.param == "sqlite" else "pg_db"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def worker_cache(
    db: Database, redis_url: str, clock: Clock, read_version: Any = None
) -> store.IndexCache:
    """An index cache wired the way dispatcher.runtime wires a worker's."""
    return store.IndexCache(
        load=lambda: store.load_signal_pipelines(db),
        load_some=lambda ids: store.load_signal_pipelines(db, ids),
        read_version=read_version or store.redis_version_reader(redis_url),
        read_changes=store.redis_change_reader(redis_url),
        fingerprint=lambda: store.signal_pipelines_fingerprint(db),
        check_interval=1.0,
        max_age=60.0,
        clock=clock,
    )


def matched(cache: store.IndexCache, clock: Clock, ticker: str) -> set[Any]:
    clock.now += 1.0  # past the check interval: the next lookup reads the version
    return set(cache.current().match(signal(ticker)))


@pytest.mark.integration
def test_every_kind_of_write_is_patched_in_without_a_rebuild(
    db: Database, redis_url: str, redis_client: Any
) -> None:
    clock = Clock()
    kept = store.add_pipeline(db, signal_spec("kept", ["AAPL"]), redis_url=redis_url)
    cache = worker_cache(db, redis_url, clock)
    assert set(cache.prime().match(signal("AAPL"))) == {kept} and cache.rebuilds == 1

    added = store.add_pipeline(db, signal_spec("added", ["AAPL", "NVDA"]), redis_url=redis_url)
    assert matched(cache, clock, "AAPL") == {kept, added}
    store.update_pipeline(db, added, signal_spec("added", ["MSFT"]), redis_url=redis_url)
    assert matched(cache, clock, "AAPL") == {kept}
    assert matched(cache, clock, "MSFT") == {added} and matched(cache, clock, "NVDA") == set()
    store.set_enabled(db, added, False, redis_url=redis_url)
    assert matched(cache, clock, "MSFT") == set()
    store.set_enabled(db, added, True, redis_url=redis_url)
    assert matched(cache, clock, "MSFT") == {added}
    store.update_pipeline(
        db, added, signal_spec("added", ["MSFT"], owner="bob"), redis_url=redis_url
    )
    assert matched(cache, clock, "MSFT") == {added}
    periodic = PipelineSpec.model_validate(
        {
            "owner": "alice",
            "name": "tick",
            "trigger_mode": "periodic",
            "schedule": {"interval_seconds": 60},
        }
    )
    store.update_pipeline(db, added, periodic, redis_url=redis_url)  # no longer a signal one
    assert matched(cache, clock, "MSFT") == set()
    store.update_pipeline(db, added, signal_spec("added", ["TSLA"]), redis_url=redis_url)
    store.remove_pipeline(db, kept, redis_url=redis_url)  # two versions, one check
    assert matched(cache, clock, "TSLA") == {added} and matched(cache, clock, "AAPL") == set()
    imported = uuid.uuid4()
    store.import_specs(
        db,
        [signal_spec("imported", ["AAPL"]).model_copy(update={"id": imported})],
        redis_url=redis_url,
    )
    assert matched(cache, clock, "AAPL") == {imported}

    assert cache.rebuilds == 1 and cache.patches == 8  # one per check that saw a write
    # The patched index is what a rebuild from the database gives, verification included.
    clock.now += 61
    index = cache.current()
    assert cache.rebuilds == 1  # the verification found nothing to fix
    fresh = MatchIndex.build(store.load_signal_scanners(db))
    for ticker in ("AAPL", "MSFT", "NVDA", "TSLA"):
        assert set(index.match(signal(ticker))) == set(fresh.match(signal(ticker)))
    assert index.size == fresh.size == 2


@pytest.mark.integration
def test_a_gap_the_log_does_not_cover_rebuilds(
    db: Database, redis_url: str, redis_client: Any
) -> None:
    clock = Clock()
    cache = worker_cache(db, redis_url, clock)
    cache.prime()
    first = store.add_pipeline(db, signal_spec("a", ["AAPL"]), redis_url=redis_url)
    assert matched(cache, clock, "AAPL") == {first} and cache.rebuilds == 1
    redis_client.incr(store.PIPELINES_VERSION_KEY)  # a bump by hand: no log entry
    assert matched(cache, clock, "AAPL") == {first} and cache.rebuilds == 2
    redis_client.delete(store.PIPELINES_CHANGES_KEY)  # the log trimmed or lost
    second = store.add_pipeline(db, signal_spec("b", ["AAPL"]), redis_url=redis_url)
    redis_client.delete(store.PIPELINES_CHANGES_KEY)
    assert matched(cache, clock, "AAPL") == {first, second} and cache.rebuilds == 3
    redis_client.flushdb()  # Redis emptied: the version goes back
    third = store.add_pipeline(db, signal_spec("c", ["AAPL"]), redis_url=redis_url)
    assert matched(cache, clock, "AAPL") == {first, second, third} and cache.rebuilds == 4


@pytest.mark.integration
def test_a_lost_bump_is_found_by_the_verification_then_rebuilt(
    db: Database, redis_url: str, redis_client: Any
) -> None:
    clock = Clock()
    cache = worker_cache(db, redis_url, clock)
    cache.prime()
    lost = store.add_pipeline(db, signal_spec("lost", ["AAPL"]), redis_url=NO_REDIS)
    seen = store.add_pipeline(db, signal_spec("seen", ["AAPL"]), redis_url=redis_url)
    assert matched(cache, clock, "AAPL") == {seen}  # the lost bump is not in the log
    clock.now += 60  # verification due: a mismatch while the version stands still...
    assert matched(cache, clock, "AAPL") == {seen} and cache.rebuilds == 1
    assert matched(cache, clock, "AAPL") == {seen, lost} and cache.rebuilds == 2  # ...confirmed
    for _ in range(3):
        clock.now += 60
        assert matched(cache, clock, "AAPL") == {seen, lost}
    assert cache.rebuilds == 2  # a consistent index is not rebuilt


@pytest.mark.integration
def test_with_redis_down_the_index_is_kept_and_verified_every_max_age(
    db: Database, redis_url: str, redis_client: Any
) -> None:
    clock = Clock()
    down = [False]
    reader = store.redis_version_reader(redis_url)

    def read_version() -> object:
        if down[0]:
            raise ConnectionError("Redis is down")
        return reader()

    cache = worker_cache(db, redis_url, clock, read_version)
    before = store.add_pipeline(db, signal_spec("before", ["AAPL"]), redis_url=redis_url)
    assert set(cache.prime().match(signal("AAPL"))) == {before}
    down[0] = True
    during = store.add_pipeline(db, signal_spec("during", ["AAPL"]), redis_url=NO_REDIS)
    for _ in range(5):
        assert matched(cache, clock, "AAPL") == {before}  # kept, not dropped
    assert cache.rebuilds == 1
    clock.now += 60
    matched(cache, clock, "AAPL")
    assert matched(cache, clock, "AAPL") == {before, during} and cache.rebuilds == 2


def test_a_cache_without_a_fingerprint_rebuilds_every_max_age() -> None:
    loads: list[int] = []
    clock = Clock()

    def load() -> list[tuple[int, Scanner]]:
        loads.append(1)
        return [(1, Scanner(tickers=("AAPL",)))]

    cache = store.IndexCache(load=load, read_version=lambda: 0, max_age=60.0, clock=clock)
    cache.current()
    clock.now += 30
    cache.current()
    clock.now += 31
    assert cache.current().match(signal("AAPL")) == [1]
    assert cache.rebuilds == 2 and len(loads) == 2
