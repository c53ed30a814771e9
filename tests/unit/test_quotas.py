"""Per-user quotas: each limit allowed at the limit, refused at limit + 1, on every write path
(add, update, import), with nothing written by a refused write; the limit named."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import quotas, store
from dispatcher.admission import Refused
from schemas.pipeline import PipelineSpec
from signalgen.config.operations import Quotas, get_operations_config
from signalgen.storage import Database

NO_REDIS = "redis://127.0.0.1:1/0"  # bumps fail fast and are only logged


def spec(
    owner: str = "alice",
    name: str = "p",
    tickers: list[str] | None = None,
    *,
    periodic: bool = False,
    watchlist: bool = False,
    pipeline_id: uuid.UUID | None = None,
) -> PipelineSpec:
    data: dict[str, Any] = {"owner": owner, "name": name}
    if pipeline_id is not None:
        data["id"] = str(pipeline_id)
    if periodic:
        data.update(trigger_mode="periodic", schedule={"interval_seconds": 60})
    elif watchlist:
        data.update(trigger_mode="signal", scanner={"watchlist": True})
    else:
        data.update(trigger_mode="signal", scanner={"tickers": tickers or ["AAPL"]})
    return PipelineSpec.model_validate(data)


def tickers(count: int, start: int = 0) -> list[str]:
    return [f"T{n:05d}" for n in range(start, start + count)]


@pytest.fixture
def limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """limits(**quotas): write operations.json with these quotas and make it this process's."""

    def configure(**values: int | None) -> Quotas:
        path = tmp_path / "operations.json"
        path.write_text(json.dumps({"quotas": values}))
        monkeypatch.setenv("OPERATIONS_CONFIG_PATH", str(path))
        get_operations_config.cache_clear()
        return get_operations_config().quotas

    yield configure
    get_operations_config.cache_clear()


def count(db: Database, owner: str) -> int:
    return len(store.list_pipelines(db, owner=owner))


# -- pure rules ---------------------------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    assert Quotas() == Quotas(
        pipelines_per_user=100,
        tickers_per_scanner=500,
        scanner_entries_per_user=5000,
        api_writes_per_minute=60,
    )


def test_tickers_per_scanner_is_a_422_naming_the_field_and_the_setting() -> None:
    limit = Quotas(tickers_per_scanner=3)
    assert quotas.spec_refusal(spec(tickers=tickers(3)), limit) is None
    refusal = quotas.spec_refusal(spec(tickers=tickers(4)), limit)
    assert refusal is not None and refusal.status_code == 422 and not refusal.quota
    assert refusal.field == "scanner.tickers"
    assert refusal.reason == (
        "tickers_per_scanner: this scanner lists 4 tickers, the limit is 3 "
        "(operations.json quotas.tickers_per_scanner)"
    )
    assert quotas.spec_refusal(spec(tickers=tickers(4)), Quotas(tickers_per_scanner=None)) is None
    assert quotas.spec_refusal(spec(periodic=True), limit) is None


def test_totals_are_409s_naming_the_owner_and_the_setting() -> None:
    limit = Quotas(pipelines_per_user=2, scanner_entries_per_user=10)
    assert quotas.totals_refusal("alice", 2, 10, limit) is None
    too_many = quotas.totals_refusal("alice", 3, 1, limit)
    assert too_many is not None and too_many.status_code == 409 and too_many.field == "owner"
    assert too_many.reason == (
        "pipelines_per_user: alice would have 3 pipelines, the limit is 2 "
        "(operations.json quotas.pipelines_per_user)"
    )
    too_wide = quotas.totals_refusal("alice", 1, 11, limit)
    assert too_wide is not None and too_wide.status_code == 409
    assert too_wide.field == "scanner.tickers"
    assert "scanner_entries_per_user" in too_wide.reason and "limit is 10" in too_wide.reason
    unlimited = Quotas(pipelines_per_user=None, scanner_entries_per_user=None)
    assert quotas.totals_refusal("alice", 10**6, 10**8, unlimited) is None


# -- through dispatcher.store (admission), on SQLite and PostgreSQL --------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db(request: pytest.FixtureRequest) -> Database:
    name = "sqlite_db" if request.param == "sqlite" else "pg_db"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def test_pipelines_per_user_allowed_at_the_limit_refused_beyond(db: Database, limits: Any) -> None:
    limits(pipelines_per_user=3)
    for n in range(2):
        store.add_pipeline(db, spec(name=f"s{n}"), redis_url=NO_REDIS)
    store.add_pipeline(db, spec(name="periodic", periodic=True), redis_url=NO_REDIS)  # counts
    with pytest.raises(Refused) as refused:
        store.add_pipeline(db, spec(name="fourth"), redis_url=NO_REDIS)
    assert refused.value.quota and refused.value.field == "owner"
    assert "alice would have 4 pipelines, the limit is 3" in refused.value.reason
    assert count(db, "alice") == 3
    store.add_pipeline(db, spec("bob", name="bobs"), redis_url=NO_REDIS)  # per owner
    assert count(db, "bob") == 1


def test_scanner_entries_per_user_sums_explicit_tickers(db: Database, limits: Any) -> None:
    limits(scanner_entries_per_user=10)
    first = store.add_pipeline(db, spec(name="a", tickers=tickers(6)), redis_url=NO_REDIS)
    store.add_pipeline(db, spec(name="w", watchlist=True), redis_url=NO_REDIS)  # counts 0
    store.add_pipeline(db, spec(name="b", tickers=tickers(4, 100)), redis_url=NO_REDIS)  # = 10
    with pytest.raises(Refused) as refused:
        store.add_pipeline(db, spec(name="c", tickers=["ONE"]), redis_url=NO_REDIS)
    assert refused.value.quota and "would list 11 tickers" in refused.value.reason
    # An update is checked too: growing a scanner past the total is refused, and kept as was.
    with pytest.raises(Refused):
        store.update_pipeline(db, first, spec(name="a", tickers=tickers(7)), redis_url=NO_REDIS)
    assert store.get_pipeline(db, first).scanner["tickers"] == tickers(6)  # type: ignore[index]
    # Shrinking one makes room for another.
    store.update_pipeline(db, first, spec(name="a", tickers=tickers(5)), redis_url=NO_REDIS)
    store.add_pipeline(db, spec(name="c", tickers=["ONE"]), redis_url=NO_REDIS)
    assert count(db, "alice") == 4


def test_tickers_per_scanner_on_add_and_update(db: Database, limits: Any) -> None:
    limits(tickers_per_scanner=5)
    pipeline_id = store.add_pipeline(db, spec(tickers=tickers(5)), redis_url=NO_REDIS)
    with pytest.raises(Refused) as refused:
        store.add_pipeline(db, spec(name="wide", tickers=tickers(6)), redis_url=NO_REDIS)
    assert not refused.value.quota and refused.value.field == "scanner.tickers"
    with pytest.raises(Refused):
        store.update_pipeline(db, pipeline_id, spec(tickers=tickers(6)), redis_url=NO_REDIS)
    assert count(db, "alice") == 1


def test_an_import_over_quota_writes_nothing(db: Database, limits: Any) -> None:
    limits(pipelines_per_user=5)
    existing = store.add_pipeline(db, spec(name="kept"), redis_url=NO_REDIS)
    batch = [spec(name=f"i{n}") for n in range(5)]  # 1 + 5 > 5
    batch.append(spec(name="renamed", pipeline_id=existing))  # an update in the same batch
    with pytest.raises(Refused) as refused:
        store.import_specs(db, batch, redis_url=NO_REDIS)
    assert "alice would have 6 pipelines, the limit is 5" in refused.value.reason
    assert [row.name for row in store.list_pipelines(db, owner="alice")] == ["kept"]
    # The same import within the limit goes through whole.
    created, updated = store.import_specs(db, batch[1:], redis_url=NO_REDIS)
    assert (created, updated) == (4, 1) and count(db, "alice") == 5


def test_an_import_spread_over_owners_is_checked_per_owner(db: Database, limits: Any) -> None:
    limits(pipelines_per_user=2)
    batch = [spec(f"u{n % 3}", name=f"p{n}") for n in range(6)]  # 2 each
    assert store.import_specs(db, batch, redis_url=NO_REDIS) == (6, 0)
    with pytest.raises(Refused) as refused:
        store.import_specs(db, [spec("u1", name="extra")], redis_url=NO_REDIS)
    assert "u1 would have 3" in refused.value.reason


def test_unlimited_quotas_check_nothing(db: Database, limits: Any) -> None:
    limits(pipelines_per_user=None, scanner_entries_per_user=None, tickers_per_scanner=None)
    store.import_specs(
        db, [spec(name=f"p{n}", tickers=tickers(600, n)) for n in range(12)], redis_url=NO_REDIS
    )
    assert count(db, "alice") == 12
