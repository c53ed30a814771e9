"""Connection and configuration failures as one line an operator can act on.

`describe(exc, endpoints)` turns an exception raised at start-up or by a command (a database that
refuses connections, Redis or the broker down, a bad URL, a malformed setting, a configuration
file at fault) into `what failed, where (the URL with its password masked), what to try`.
Anything else returns None: a bug keeps its traceback. Pure: the URLs are passed in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from signalgen.logs import redact

#: Exit code of a failure `describe` recognises: 2 for configuration, 1 for an unreachable service.
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 1


@dataclass(frozen=True)
class Endpoints:
    """The URLs a process talks to, as configured (unmasked; `describe` masks them)."""

    database_url: str = ""
    broker_url: str = ""
    redis_url: str = ""


@dataclass(frozen=True)
class Failure:
    """One recognised failure: the line to print and the exit code."""

    line: str
    exit_code: int


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then its causes and contexts, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # SQLAlchemy prefixes the driver's class and appends a background link; keep the reason.
    if text.startswith("(") and ") " in text:
        text = text.split(") ", 1)[1]
    text = text.splitlines()[0] if text else type(exc).__name__
    text = " ".join(text.removeprefix("connection failed: ").split())
    return redact(text.strip().rstrip("."))


def _qualified(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def _is(exc: BaseException, *names: str) -> bool:
    """Whether `exc` is an instance of a class named (module.Class) in `names`, by its MRO, so
    that optional libraries need not be imported to recognise their errors."""
    return any(f"{c.__module__}.{c.__qualname__}" in names for c in type(exc).__mro__)


def _database_hint(reason: str, url: str) -> str:
    low = reason.lower()
    if "authentication" in low or ("role" in low and "does not exist" in low):
        return "check the user and password in DATABASE_URL"
    if "does not exist" in low and "database" in low:
        return "create the database (createdb) or fix its name in DATABASE_URL"
    if "unable to open database file" in low:
        return "check that the SQLite file's directory exists and is writable (DATABASE_URL)"
    if "could not translate host name" in low or "name or service not known" in low:
        return "check the host name in DATABASE_URL"
    if url.startswith("sqlite"):
        return "check DATABASE_URL"
    return "is PostgreSQL running and reachable there? Check DATABASE_URL"


def describe(exc: BaseException, endpoints: Endpoints) -> Failure | None:
    """The one line for a connection or configuration failure anywhere in `exc`'s chain."""
    for link in _chain(exc):
        failure = _describe_one(link, endpoints)
        if failure is not None:
            return failure
    return None


def _describe_one(exc: BaseException, endpoints: Endpoints) -> Failure | None:
    database = redact(endpoints.database_url) or "(DATABASE_URL)"
    broker = redact(endpoints.broker_url) or "(BROKER_URL)"
    redis_url = redact(endpoints.redis_url) or "(REDIS_URL)"
    if _is(exc, "signalgen.config.ConfigError"):
        return Failure(f"configuration error: {exc}", EXIT_CONFIG)
    if _is(exc, "pydantic_core._pydantic_core.ValidationError") and _is_settings_error(exc):
        return Failure(f"configuration error: {_settings_errors(exc)}", EXIT_CONFIG)
    if _is(exc, "sqlalchemy.exc.NoSuchModuleError", "sqlalchemy.exc.ArgumentError"):
        return Failure(
            f"DATABASE_URL {database} is not a database URL we can use ({_first_line(exc)}); "
            "expected postgresql://user:password@host:5432/name or sqlite:///path",
            EXIT_CONFIG,
        )
    if _is(exc, "signalgen.storage.engine.SchemaMismatch"):
        return Failure(
            f"database {database}: {_first_line(exc)}; point DATABASE_URL at an empty "
            "database or at one made by `signalgen db upgrade`",
            EXIT_CONFIG,
        )
    if _is(exc, "sqlalchemy.exc.OperationalError", "sqlalchemy.exc.InterfaceError"):
        reason = _first_line(exc)
        return Failure(
            f"cannot use the database at {database}: {reason}; "
            f"{_database_hint(reason, endpoints.database_url)}",
            EXIT_UNAVAILABLE,
        )
    if _is(exc, "kombu.exceptions.OperationalError", "amqp.exceptions.AMQPError"):
        return Failure(
            f"cannot reach the broker at {broker}: {_first_line(exc)}; is Redis or RabbitMQ "
            "running there? Check BROKER_URL",
            EXIT_UNAVAILABLE,
        )
    if _is(exc, "redis.exceptions.AuthenticationError"):
        return Failure(
            f"Redis at {redis_url} refused the login: {_first_line(exc)}; check the password "
            "in REDIS_URL",
            EXIT_UNAVAILABLE,
        )
    if _is(exc, "redis.exceptions.ConnectionError", "redis.exceptions.TimeoutError"):
        return Failure(
            f"cannot reach Redis at {redis_url}: {_first_line(exc)}; is Redis running there? "
            "Check REDIS_URL (default: the broker, if it is Redis)",
            EXIT_UNAVAILABLE,
        )
    return None


def _is_settings_error(exc: BaseException) -> bool:
    title = getattr(exc, "title", "")
    return title == "Settings"


def _settings_errors(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return _first_line(exc)
    parts = []
    for error in errors():
        where = ".".join(str(p) for p in error.get("loc", ())) or "settings"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(message if where == "settings" else f"{where}: {message}")
    return "; ".join(parts)


def endpoints_from(environ: Mapping[str, str]) -> Endpoints:
    """The configured URLs, from the settings when they load, else from the raw environment
    (a failure may be the settings themselves)."""
    try:
        from signalgen.settings import get_settings

        settings = get_settings()
        return Endpoints(
            database_url=settings.database_url,
            broker_url=settings.broker_url,
            redis_url=settings.effective_redis_url,
        )
    except Exception:  # the settings are what failed: name what the environment says
        broker = environ.get("BROKER_URL", "")
        return Endpoints(
            database_url=environ.get("DATABASE_URL", ""),
            broker_url=broker,
            redis_url=environ.get("REDIS_URL", "") or broker,
        )


def current_endpoints() -> Endpoints:
    return endpoints_from(os.environ)
