"""Real services for integration tests: skipped locally when missing, a failure under CI."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_ADMIN_URL = os.environ.get(
    "TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST = os.environ.get("TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("TEST_REDIS_PORT", "6379"))
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def unavailable(service: str, reason: str) -> None:
    """Skip, or fail when CI is set: CI must never pass by skipping what it cannot reach."""
    message = f"{service} is not available: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: integration services are required)", pytrace=False)
    pytest.skip(message)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards. Yields its SQLAlchemy URL."""
    from sqlalchemy import create_engine, text

    name = f"sg_test_{uuid.uuid4().hex[:10]}"
    try:
        # pre-ping: the drop at the end must survive a PostgreSQL restart during the test.
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        unavailable("PostgreSQL", str(exc).splitlines()[0])
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@contextmanager
def redis_database() -> Iterator[str]:
    """A Redis logical database (1..15) locked for this test session and flushed. Yields its URL."""
    import redis

    try:
        control = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0, socket_timeout=5)
        control.ping()
    except Exception as exc:
        unavailable("Redis", str(exc))
    token = uuid.uuid4().hex
    chosen = None
    for number in range(1, 16):
        if control.set(f"sg-test-lock:{number}", token, nx=True, ex=3600):
            chosen = number
            break
    if chosen is None:
        pytest.fail("every Redis test database 1..15 is locked by another test session")
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=chosen)
    client.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{chosen}"
    finally:
        client.flushdb()
        client.close()
        if control.get(f"sg-test-lock:{chosen}") == token.encode():
            control.delete(f"sg-test-lock:{chosen}")
        control.close()


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A fresh RabbitMQ vhost, deleted afterwards. Yields its AMQP URL."""
    import shutil
    import subprocess

    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        unavailable("RabbitMQ", "rabbitmqctl not found")
    vhost = f"sg-test-{uuid.uuid4().hex[:10]}"
    try:
        subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
        subprocess.run(
            [ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except Exception as exc:
        unavailable("RabbitMQ", str(exc))
    try:
        scheme, rest = AMQP_URL.split("://", 1)
        yield f"{scheme}://{rest.split('/', 1)[0]}/{vhost}"
    finally:
        subprocess.run([ctl, "delete_vhost", vhost], capture_output=True, timeout=60)
