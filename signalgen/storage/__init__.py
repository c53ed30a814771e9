"""SQL storage: one declarative Base, engines made per process, dialect-neutral upserts."""

from signalgen.storage.base import Base
from signalgen.storage.engine import Database, get_database, insert_ignore, make_engine, migrate

__all__ = ["Base", "Database", "get_database", "insert_ignore", "make_engine", "migrate"]
