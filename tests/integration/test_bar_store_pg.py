"""The bar store's and usage counter's tests, on PostgreSQL (upserts and window functions
differ by dialect)."""

from __future__ import annotations

import pytest

from signalgen.marketdata.store import BarStore
from signalgen.storage import Database
from tests.unit.test_bar_store import (  # noqa: F401  (collected here, on PostgreSQL)
    statements,
    test_load_bars_aligns_last_n_of_each_ticker_on_one_axis,
    test_load_bars_edges,
    test_load_bars_matches_the_real_file,
    test_load_bars_uses_one_query,
    test_summary,
    test_upsert_replaces_on_ticker_and_day,
    test_upsert_writes_in_batches,
)
from tests.unit.test_usage import (  # noqa: F401
    test_calls_and_errors_add_up_in_their_hour,
    test_concurrent_increments_are_not_lost,
    test_totals_filter_by_generator_and_time,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def store(pg_db: Database) -> BarStore:
    assert pg_db.dialect == "postgresql"
    return BarStore(pg_db)


@pytest.fixture
def database(pg_db: Database) -> Database:
    return pg_db
