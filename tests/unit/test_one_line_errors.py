"""Connection and configuration failures are one line (what, the URL with its password masked,
what to try) and a non-zero exit, on every command and process start; `-v` keeps the traceback.

The commands run as the operator runs them (the console script, `python -m tasks.worker`,
`celery -A tasks beat`), against ports where nothing listens.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from signalgen.failures import EXIT_CONFIG, EXIT_UNAVAILABLE, Endpoints, describe

PASSWORD = "s3cret-pw"
CLEARED = (
    "BROKER_URL",
    "DATABASE_URL",
    "REDIS_URL",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "CELERY_BROKER_URL",
    "GENERATORS_CONFIG_PATH",
    "WATCHLIST_CONFIG_PATH",
)


def closed_port() -> int:
    """A local port where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in CLEARED}
    environ.update(env)
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,  # no .env
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def signalgen(*args: str) -> list[str]:
    return ["-c", "from signalgen.interfaces.cli import run; run()", *args]


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if "SecurityWarning" not in line]
    # Celery warns about running as root (CI containers); everything else must be our line.
    lines = [
        line
        for line in lines
        if line.strip()
        and not line.startswith(("absolutely not", "Please specify", "User information", "  _warn"))
    ]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr + done.stdout
    return lines[0]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'one-line.db'}"


def test_a_database_that_refuses_connections_is_one_line_on_any_command(tmp_path: Path) -> None:
    url = f"postgresql://signalgen:{PASSWORD}@127.0.0.1:{closed_port()}/signalgen"
    for command in (["pipelines", "list"], ["signals", "list"], ["db", "upgrade"]):
        done = run(signalgen(*command), tmp_path, DATABASE_URL=url)
        assert done.returncode == EXIT_UNAVAILABLE, (command, done.stderr)
        line = one_line(done)
        assert line.startswith("cannot use the database at postgresql://signalgen:***@127.0.0.1")
        assert "Connection refused" in line and "DATABASE_URL" in line and "-v" in line


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    url = f"postgresql://signalgen:{PASSWORD}@127.0.0.1:{closed_port()}/signalgen"
    done = run(signalgen("-v", "pipelines", "list"), tmp_path, DATABASE_URL=url)
    assert done.returncode == EXIT_UNAVAILABLE
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("cannot use the database at")


def test_a_url_that_is_no_database_url_is_a_configuration_error(tmp_path: Path) -> None:
    done = run(signalgen("pipelines", "list"), tmp_path, DATABASE_URL=f"mysqlx://u:{PASSWORD}@h/d")
    assert done.returncode == EXIT_CONFIG
    line = one_line(done)
    assert line.startswith("DATABASE_URL mysqlx://u:***@h/d is not a database URL")


def test_replay_enqueue_with_the_broker_down(tmp_path: Path, sqlite_url: str) -> None:
    port = closed_port()
    broker = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    done = run(
        signalgen("replay", "--last", "1d", "--enqueue"),
        tmp_path,
        BROKER_URL=broker,
        DATABASE_URL=sqlite_url,
    )
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    line = one_line(done)
    assert line.startswith(f"cannot reach the broker at redis://:***@127.0.0.1:{port}/0")
    assert "BROKER_URL" in line


def test_pipelines_add_with_redis_down_says_it_was_saved(tmp_path: Path, sqlite_url: str) -> None:
    redis_url = f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0"
    done = run(
        signalgen("pipelines", "add", "--owner", "alice", "--name", "n", "--tickers", "AAPL"),
        tmp_path,
        REDIS_URL=redis_url,
        DATABASE_URL=sqlite_url,
        PIPELINE_INDEX_MAX_AGE_SECONDS="45",
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.split()) == 1  # the new pipeline's id
    notes = done.stderr.strip().splitlines()
    saved = next(line for line in notes if "saved" in line)
    assert saved.startswith("note: saved in the database, but workers could not be told")
    assert "within 45 s (PIPELINE_INDEX_MAX_AGE_SECONDS)" in saved
    assert "pipelines_version_bump_failed" not in done.stderr and PASSWORD not in done.stderr


def test_rabbitmq_without_redis_url_is_refused_naming_redis_url(tmp_path: Path) -> None:
    amqp = f"amqp://guest:{PASSWORD}@127.0.0.1:{closed_port()}//"
    done = run(signalgen("pipelines", "list"), tmp_path, BROKER_URL=amqp)
    assert done.returncode == EXIT_CONFIG
    assert one_line(done).startswith("configuration error: REDIS_URL must be set when BROKER_URL")


def test_a_malformed_setting_is_one_line(tmp_path: Path) -> None:
    done = run(signalgen("signals", "list"), tmp_path, LOG_LEVEL="chatty")
    assert done.returncode == EXIT_CONFIG
    assert one_line(done).startswith("configuration error: LOG_LEVEL: Input should be")


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "tasks.worker", "--loglevel=INFO", "-Q", "celery", "--pool=solo"],
        ["-m", "celery", "-A", "tasks", "worker", "--loglevel=INFO", "--pool=solo"],
    ],
    ids=["python -m tasks.worker", "celery worker"],
)
def test_worker_start_with_the_database_down_is_one_line(tmp_path: Path, argv: list[str]) -> None:
    url = f"postgresql://signalgen:{PASSWORD}@127.0.0.1:{closed_port()}/signalgen"
    done = run(argv, tmp_path, DATABASE_URL=url, BROKER_URL="memory://")
    assert done.returncode != 0
    line = one_line(done)
    assert line.startswith("database schema check failed: cannot use the database at ")
    assert "postgresql://signalgen:***@" in line and "LOG_LEVEL=DEBUG" in line


@pytest.mark.parametrize("program", ["beat", "worker"])
def test_celery_start_with_rabbitmq_and_no_redis_url(tmp_path: Path, program: str) -> None:
    amqp = f"amqp://guest:{PASSWORD}@127.0.0.1:{closed_port()}//"
    done = run(["-m", "celery", "-A", "tasks", program], tmp_path, BROKER_URL=amqp)
    assert done.returncode != 0
    assert one_line(done).startswith("configuration error: REDIS_URL must be set")


# -- describe(): the classification, without processes ------------------------------------------

ENDPOINTS = Endpoints(
    database_url=f"postgresql://u:{PASSWORD}@db:5432/x",
    broker_url=f"amqp://u:{PASSWORD}@mq:5672//",
    redis_url=f"redis://:{PASSWORD}@cache:6379/1",
)


def test_describe_names_the_service_and_masks_its_url() -> None:
    import kombu.exceptions
    import redis.exceptions

    broker = describe(kombu.exceptions.OperationalError("[Errno 111] refused"), ENDPOINTS)
    assert broker is not None and broker.exit_code == EXIT_UNAVAILABLE
    assert broker.line.startswith("cannot reach the broker at amqp://u:***@mq:5672//")
    cache = describe(redis.exceptions.ConnectionError("Error 111"), ENDPOINTS)
    assert cache is not None and "Redis at redis://:***@cache:6379/1" in cache.line
    login = describe(redis.exceptions.AuthenticationError("invalid password"), ENDPOINTS)
    assert login is not None and "check the password in REDIS_URL" in login.line


def test_describe_finds_the_failure_behind_a_wrapper_and_leaves_bugs_alone() -> None:
    import redis.exceptions

    try:
        try:
            raise redis.exceptions.TimeoutError("Timeout connecting")
        except redis.exceptions.TimeoutError as inner:
            raise RuntimeError("while building resources") from inner
    except RuntimeError as outer:
        wrapped = describe(outer, ENDPOINTS)
    assert wrapped is not None and wrapped.line.startswith("cannot reach Redis at")
    assert describe(KeyError("a bug"), ENDPOINTS) is None
    assert describe(ZeroDivisionError(), ENDPOINTS) is None


def test_database_hints_follow_the_reason() -> None:
    from sqlalchemy.exc import OperationalError

    def line(reason: str) -> str:
        failure = describe(OperationalError("connect", {}, Exception(reason)), ENDPOINTS)
        assert failure is not None and PASSWORD not in failure.line
        return failure.line

    assert "check the user and password" in line('password authentication failed for user "u"')
    assert "create the database" in line('FATAL:  database "x" does not exist')
    assert "is PostgreSQL running" in line("Connection refused")
