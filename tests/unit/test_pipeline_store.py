"""Pipeline writes: an update never resurrects a pipeline deleted meanwhile."""

from __future__ import annotations

import pytest

from dispatcher import store
from schemas.pipeline import PipelineSpec
from signalgen.db import Database


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
