"""Engines and sessions, made lazily once per process (Celery prefork children included)."""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, FromClause, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import Insert

from signalgen.storage.alembic_log import quiet_alembic


def normalize_url(url: str) -> str:
    """postgres:// and postgresql:// go through psycopg 3; everything else is left as given."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    if parsed.get_backend_name() == "postgresql":
        # Every session in UTC whatever the server's default: timestamps are read back as UTC,
        # and the whole range a signal may carry (year 1 to 9999) stays readable (in a zone
        # east or west of UTC, 0001-01-01 or 9999-12-31 falls outside what the driver decodes).
        kwargs.setdefault("connect_args", {"options": "-c timezone=UTC"})
    engine = create_engine(url, **kwargs)
    _ping_when_idle(engine)
    return engine


#: A pooled connection unused for longer than this is pinged before it is handed out.
IDLE_PING_SECONDS = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling where it pays: `pool_pre_ping` costs a round trip on every
    checkout (two of the seven per dispatched signal); a connection used moments ago is almost
    surely alive, and if the server restarted meanwhile the statement fails with a disconnect
    error, SQLAlchemy invalidates the pool and the task's retry gets fresh connections."""

    @event.listens_for(engine, "checkin")
    def _stamp(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in = record.info.get("checked_in")
        if checked_in is None or time.monotonic() - checked_in <= IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool discards this connection and tries another
            raise DisconnectionError(f"idle connection failed its ping: {exc}") from exc


@dataclass
class Database:
    """An engine and its session factory. Pass it explicitly; build it with `get_database()`."""

    url: str
    engine: Engine = field(init=False)
    sessions: sessionmaker[Session] = field(init=False)
    #: PostgreSQL: an engine of its own whose connections are in autocommit for their whole
    #: life (`statement`); it connects on first use. Its own pool, so that no checkout sets
    #: and resets the mode: per `pipelines.execute` (two statements) that cost 0.18-0.35 ms of
    #: CPU here. A process opens as many of its connections as it runs statements at once (one
    #: per pool process), besides the main pool's.
    _autocommit: Engine | None = field(init=False, default=None, repr=False)
    #: PostgreSQL: the main thread's `statement` connection, kept checked out between blocks
    #: (`_kept_connection`), when it was last used, and whether a block holds it now.
    _kept: Connection | None = field(init=False, default=None, repr=False)
    _kept_used: float = field(init=False, default=0.0, repr=False)
    _kept_busy: bool = field(init=False, default=False, repr=False)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        if self.dialect == "postgresql":
            self._autocommit = make_engine(self.url, isolation_level="AUTOCOMMIT")

    @property
    def engines(self) -> tuple[Engine, ...]:
        """Every engine of this Database: the main one, and on PostgreSQL `statement`'s."""
        return (self.engine,) if self._autocommit is None else (self.engine, self._autocommit)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        with self.sessions.begin() as session:
            yield session

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """A Core connection for one writing statement that is its own transaction: the hot
        path's statements, as Core (an ORM session's bookkeeping was a third of
        `pipelines.execute`'s SQL cost under py-spy).

        On PostgreSQL the connection is in autocommit: the statement commits as it ends, in its
        own round trip, where a transaction took three (psycopg sends BEGIN and COMMIT as
        round trips of their own). Measured here on one UPDATE: 0.8 against 1.6 ms of wall time
        and 0.40 against 0.67 ms of this process's CPU. A SELECT run after it is a transaction
        of its own too. The main thread's connection stays checked out between blocks
        (`_kept_connection`). Elsewhere (SQLite, whose paths take several statements to do what
        one does on PostgreSQL) a transaction, committed on success and rolled back on error."""
        if self._autocommit is None:
            with self.engine.begin() as connection:
                yield connection
            return
        if self._kept_busy or threading.current_thread() is not threading.main_thread():
            # A block inside a block, or another thread: a pooled connection of its own.
            with self._autocommit.connect() as connection:
                yield connection
            return
        # Busy before any I/O: a greenlet that switches in meanwhile takes a pooled one.
        self._kept_busy = True
        try:
            connection = self._kept_connection()
        except BaseException:
            self._kept_busy = False
            raise
        try:
            yield connection
        except BaseException:
            # Whatever failed, the next block starts on a connection in a known state (the
            # pool invalidated this one if the error broke it).
            self._kept = None
            connection.close()
            raise
        finally:
            self._kept_busy = False
            self._kept_used = time.monotonic()

    def _kept_connection(self) -> Connection:
        """The main thread's `statement` connection (a Celery pool process runs its tasks
        there), kept checked out from one block to the next: the pool's checkout and checkin
        cost more CPU than a hot-path statement's own run on the driver (45-65 us of 90-160
        per block, measured here; docs/performance.md). One left idle longer than
        `IDLE_PING_SECONDS` is pinged first, as the pool does on checkout."""
        assert self._autocommit is not None
        connection = self._kept
        if connection is not None and (
            connection.closed
            or connection.invalidated
            or (
                time.monotonic() - self._kept_used > IDLE_PING_SECONDS
                and not self._answers(connection)
            )
        ):
            self._kept = None
            connection.close()
            connection = None
        if connection is None:
            connection = self._kept = self._autocommit.connect()
        return connection

    def _answers(self, connection: Connection) -> bool:
        try:
            return bool(
                connection.dialect.do_ping(connection.connection.dbapi_connection)  # type: ignore[arg-type]
            )
        except Exception as exc:
            connection.invalidate(exc)
            return False

    @contextmanager
    def rehearsal(self) -> Iterator[Connection]:
        """A connection of `statement`'s engine in a transaction that is always rolled back: to
        run the hot path's statements once, writing nothing, so that the process has compiled
        them (SQLAlchemy's statement cache belongs to the engine) before its first signal."""
        with (self._autocommit or self.engine).connect() as connection:
            if self._autocommit is not None:  # this checkout only: a transaction to roll back
                connection.execution_options(isolation_level="READ COMMITTED")
            transaction = connection.begin()
            try:
                yield connection
            finally:
                transaction.rollback()

    def dispose(self) -> None:
        """Close the kept `statement` connection and every pooled one."""
        connection, self._kept = self._kept, None
        if connection is not None:
            connection.close()
        for engine in self.engines:
            engine.dispose()


_databases: dict[tuple[int, str], Database] = {}
_lock = threading.Lock()


def get_database(url: str | None = None) -> Database:
    """The process's Database for `url` (default: settings). A forked child gets its own."""
    if url is None:
        from signalgen.settings import get_settings

        url = get_settings().database_url
    key = (os.getpid(), url)
    with _lock:
        database = _databases.get(key)
        if database is None:
            database = _databases[key] = Database(url)
        return database


def dialect_insert(table: FromClause, dialect: str) -> Any:
    """The dialect's own INSERT (it has ON CONFLICT): PostgreSQL's, or SQLite's (the embedded
    default). One place for the choice the bar store, the usage counter and `insert_ignore`
    each made."""
    name = "postgresql" if dialect == "postgresql" else "sqlite"
    return importlib.import_module(f"sqlalchemy.dialects.{name}").insert(table)


def insert_ignore(
    table: FromClause,
    dialect: str,
    rows: Sequence[dict[str, Any]] | None = None,
    index_elements: Sequence[str] | None = None,
) -> Insert:
    """`INSERT .. ON CONFLICT DO NOTHING` for PostgreSQL and SQLite (add `.returning(...)`)."""
    statement = dialect_insert(table, dialect)
    if rows is not None:
        statement = statement.values(list(rows))
    result: Insert = statement.on_conflict_do_nothing(index_elements=index_elements)
    return result


class SchemaMismatch(RuntimeError):
    """A database with our tables but no migration history, whose schema differs from ours."""


@dataclass(frozen=True)
class MigrationOutcome:
    """What `migrate` did: the revision before (None: an empty database or no history) and
    after, and whether an existing schema was only stamped."""

    before: str | None
    after: str | None
    stamped: bool = False

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def describe(self) -> str:
        if self.stamped:
            return f"existing schema recorded at revision {self.after}"
        if not self.changed:
            return f"database schema at revision {self.after} (up to date)"
        if self.before is None:
            return f"database schema created at revision {self.after}"
        return f"database schema migrated from revision {self.before} to {self.after}"


def migrate(database: Database) -> MigrationOutcome:
    """Bring the schema to the newest version (Alembic migrations).

    A database whose tables were made without migrations (`create_all`: test fixtures, or an
    embedded database from before migrations existed) is stamped as current when, and only when,
    its schema equals the models; otherwise SchemaMismatch names the differences. A change is
    logged as one line (`database_schema_migrated`); Alembic's own lines are kept quiet.
    """
    with quiet_alembic():  # Alembic logs at import ("setup plugin ...") and while it runs
        return _migrate(database)


def _migrate(database: Database) -> MigrationOutcome:
    from sqlalchemy import inspect

    from signalgen.storage.migrations import current_revision, stamp, upgrade

    tables = set(inspect(database.engine).get_table_names())
    if tables and "alembic_version" not in tables:
        differences = schema_differences(database)
        if differences:
            raise SchemaMismatch(
                f"database has tables {sorted(tables)} but no migration history, and differs "
                f"from the models: {differences[:5]}"
            )
        stamp(database)
        outcome = MigrationOutcome(None, current_revision(database), stamped=True)
    else:
        before = current_revision(database) if "alembic_version" in tables else None
        upgrade(database)
        outcome = MigrationOutcome(before, current_revision(database))
    if outcome.changed:
        from signalgen.logs import log_event

        log_event(
            logging.getLogger("signalgen.storage"),
            "database_schema_migrated",
            from_revision=outcome.before,
            to_revision=outcome.after,
            stamped=outcome.stamped,
        )
    return outcome


def schema_differences(database: Database) -> list[Any]:
    """What Alembic would change to make the database match the models (empty: it matches)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import signalgen.storage.models  # noqa: F401  (registers every table)
    from signalgen.storage.base import Base

    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


#: Key of the PostgreSQL advisory lock held while one process creates or migrates the schema.
_SCHEMA_LOCK_KEY = 0x5167_5C4E


def ensure_schema(database: Database) -> None:
    """Make sure the schema exists, once, whoever calls first (worker start-up, `signalgen dev`).

    With Alembic revisions in the project, this is `migrate`; without any yet, the models'
    tables are created where missing. On PostgreSQL an advisory lock makes concurrent callers
    (two workers starting together) wait for each other instead of racing on CREATE TABLE.
    """
    import signalgen.storage.models  # noqa: F401  (registers every table)
    from signalgen.storage.base import Base

    # Looked up without importing the migrations package: Alembic costs ~20 MB per process.
    versions = Path(__file__).resolve().parent / "migrations" / "versions"
    has_revisions = any(versions.glob("*.py"))

    def apply() -> None:
        if has_revisions:
            migrate(database)
        else:
            Base.metadata.create_all(database.engine)

    if database.dialect != "postgresql":
        apply()
        return
    from sqlalchemy import text

    with database.engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
        try:
            apply()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            connection.commit()
