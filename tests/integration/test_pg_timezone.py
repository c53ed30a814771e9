"""PostgreSQL sessions run in UTC whatever the server's or database's default time zone, so
every timestamp a signal may carry (year 1 to 9999) reads back, and reads back as UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text

from signalgen.storage.engine import make_engine, normalize_url
from tests.support.services import postgres_database

EXTREMES = [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC)]


@pytest.mark.integration
@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo"])
def test_extreme_timestamps_read_back_in_any_database_time_zone(zone: str) -> None:
    with postgres_database() as url:
        name = url.rsplit("/", 1)[1]
        admin = create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"ALTER DATABASE \"{name}\" SET timezone TO '{zone}'"))
            connection.execute(text("CREATE TABLE t (at timestamptz)"))
            for moment in EXTREMES:
                connection.execute(text("INSERT INTO t VALUES (:at)"), {"at": moment})
        admin.dispose()

        # Without the UTC session (what the engine did before), the driver cannot read them.
        raw = create_engine(normalize_url(url))
        with raw.connect() as connection, pytest.raises(Exception, match=r"too (small|large)"):
            connection.execute(text("SELECT at FROM t")).all()
        raw.dispose()

        engine = make_engine(url)
        with engine.connect() as connection:
            zone_seen = connection.execute(text("SHOW timezone")).scalar_one()
            read = [row[0] for row in connection.execute(text("SELECT at FROM t ORDER BY at"))]
        engine.dispose()
        assert zone_seen == "UTC"
        assert read == EXTREMES
