"""Shared fixtures. Integration fixtures use real services and fail (not skip) under CI."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from signalgen.storage import Database
from signalgen.storage.base import Base
from tests.support.services import postgres_database, redis_database

DATA_DIR = Path(__file__).resolve().parent / "data"

# The suite's webhook receivers listen on loopback: the operator's allowance the tests need
# (the default refuses loopback). Child processes (workers, beats) inherit both.
os.environ.setdefault("WEBHOOK_ALLOW_NETWORKS", "127.0.0.1/32,::1/128")
# A fixed Fernet key for the suite's encrypted webhook secrets (never a production key).
os.environ.setdefault("SECRETS_KEYS", "B35Jf3-FQbm2ssvC6IamPNrQEm50aWjjdSjrDNA4fsM=")


#: Fixtures that reach a real service: a test using one is an integration test.
SERVICE_FIXTURES = frozenset({"pg_url", "pg_db", "redis_url", "redis_client", "amqp_url"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `integration` every test that requests a service fixture, wherever it lives."""
    for item in items:
        uses = SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses and item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.integration)


# -- the fault suite's table (tests/faults): one summary, also when xdist ran the scenarios ------


def pytest_sessionfinish(session: pytest.Session) -> None:
    output = getattr(session.config, "workeroutput", None)
    if output is not None and "tests.faults.harness" in sys.modules:  # an xdist worker
        output["fault_results"] = [vars(r) for r in sys.modules["tests.faults.harness"].RESULTS]


@pytest.hookimpl(optionalhook=True)  # an xdist hook: run in the controller as a worker ends
def pytest_testnodedown(node: Any, error: object) -> None:
    results = getattr(node, "workeroutput", {}).get("fault_results")
    if results:
        from tests.faults import harness

        harness.RESULTS.extend(harness.Result(**fields) for fields in results)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    harness = sys.modules.get("tests.faults.harness")
    if harness is not None and harness.RESULTS:
        terminalreporter.write_sep("=", "fault suite")
        terminalreporter.write_line(harness.table(harness.RESULTS))
        for result in harness.RESULTS:
            if result.notes:
                terminalreporter.write_line(f"{result.fault}: {result.notes}")


def require_integration_marker(request: pytest.FixtureRequest, service: str) -> None:
    """A service fixture reached at run time (`request.getfixturevalue`) by an unmarked test:
    fail, so `-m "not integration"` never runs a test that needs a service."""
    if request.node.get_closest_marker("integration") is None:
        pytest.fail(
            f"{request.node.nodeid} uses {service} but is not marked integration "
            '(e.g. pytest.param("postgresql", marks=pytest.mark.integration))',
            pytrace=False,
        )


def create_schema(database: Database) -> None:
    import signalgen.storage.models  # noqa: F401  (registers tables)

    Base.metadata.create_all(database.engine)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """A fresh SQLite database (the embedded default), schema applied."""
    database = Database(f"sqlite:///{tmp_path / 'test.db'}")
    create_schema(database)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def pg_db(request: pytest.FixtureRequest, pg_url: str) -> Iterator[Database]:
    """The session's PostgreSQL database with a clean schema for each test."""
    require_integration_marker(request, "PostgreSQL")
    database = Database(pg_url)
    Base.metadata.drop_all(database.engine)
    create_schema(database)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_database() as url:
        yield url


@pytest.fixture
def redis_client(request: pytest.FixtureRequest, redis_url: str) -> Iterator[object]:
    require_integration_marker(request, "Redis")
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()
