"""Provider calls counted per (provider, generator, endpoint, hour), with errors: cost tracking.

Every HTTP call to a data provider adds one to its hour's row in `provider_calls` (an upsert
that increments, atomic on SQLite and PostgreSQL alike), and an error to `errors` when it failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import func, select

from signalgen.storage.engine import Database, dialect_insert
from signalgen.storage.models import ProviderCall


class UsageRecorder(Protocol):
    """Where a source reports each call it made."""

    def record(
        self, *, provider: str, generator: str, endpoint: str, error: bool = False
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class UsageTotal:
    provider: str
    generator: str
    endpoint: str
    calls: int
    errors: int


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour holding `moment` (aware datetimes only)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime refused: pass an aware UTC datetime")
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def record_call(
    database: Database,
    *,
    provider: str,
    generator: str,
    endpoint: str,
    error: bool = False,
    at: datetime | None = None,
    calls: int = 1,
) -> None:
    """Add `calls` calls (and as many errors when `error`) to the hour of `at` (default: now)."""
    table = ProviderCall.__table__
    statement = dialect_insert(table, database.dialect).values(
        provider=provider,
        generator=generator,
        endpoint=endpoint,
        hour=hour_of(at or datetime.now(UTC)),
        calls=calls,
        errors=calls if error else 0,
    )
    statement = statement.on_conflict_do_update(
        index_elements=["provider", "generator", "endpoint", "hour"],
        set_={
            "calls": table.c.calls + statement.excluded.calls,
            "errors": table.c.errors + statement.excluded.errors,
        },
    )
    with database.session() as session:
        session.execute(statement)


class DatabaseUsage:
    """`UsageRecorder` writing to the `provider_calls` table."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def record(self, *, provider: str, generator: str, endpoint: str, error: bool = False) -> None:
        record_call(
            self.database, provider=provider, generator=generator, endpoint=endpoint, error=error
        )


def usage_totals(
    database: Database,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    generator: str | None = None,
    provider: str | None = None,
) -> list[UsageTotal]:
    """Calls and errors per (provider, generator, endpoint) over hours in [since, until).

    Counts are kept per hour, so the range selects whole hours: the hour holding `since` is
    included, and every hour that starts before `until`.
    """
    query = select(
        ProviderCall.provider,
        ProviderCall.generator,
        ProviderCall.endpoint,
        func.sum(ProviderCall.calls),
        func.sum(ProviderCall.errors),
    )
    if since is not None:
        query = query.where(ProviderCall.hour >= hour_of(since))
    if until is not None:
        query = query.where(ProviderCall.hour < until)
    if generator is not None:
        query = query.where(ProviderCall.generator == generator)
    if provider is not None:
        query = query.where(ProviderCall.provider == provider)
    query = query.group_by(
        ProviderCall.provider, ProviderCall.generator, ProviderCall.endpoint
    ).order_by(ProviderCall.provider, ProviderCall.generator, ProviderCall.endpoint)
    with database.session() as session:
        return [
            UsageTotal(p, g, e, int(c or 0), int(x or 0))
            for p, g, e, c, x in session.execute(query).all()
        ]
