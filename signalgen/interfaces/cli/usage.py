"""`signalgen usage`: data-provider calls and errors per generator and endpoint (cost tracking)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from signalgen.interfaces.cli import storage


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO date or time (e.g. 2024-05-01 or 2024-05-01T13:00+00:00)",
            param_hint="--since",
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment  # naive means UTC


@click.command()
@click.option("--since", help="Count from this ISO date/time (UTC unless an offset is given).")
@click.option("--generator", help="Only this generator.")
@click.option(
    "--by",
    "period",
    type=click.Choice(["hour", "day"]),
    help="Calls, errors and estimated cost per generator per hour or day.",
)
@click.option(
    "--budgets", is_flag=True, help="Each generator's calls this hour/today against its budget."
)
def usage(since: str | None, generator: str | None, period: str | None, budgets: bool) -> None:
    """Provider calls and errors per generator and endpoint (cost and budgets with --by and
    --budgets; cost per call and budgets are set in config/operations.json)."""
    from signalgen.marketdata.usage import usage_totals

    start = _parse_since(since)
    database = storage.open_database(migrate=True)
    if period is not None or budgets:
        _cost_and_budgets(database, start, generator, period, budgets)
        return
    totals = usage_totals(database, since=start, generator=generator)
    if not totals:
        click.echo("no provider calls recorded" + (f" since {start.isoformat()}" if start else ""))
        return
    click.echo(f"{'provider':<10} {'generator':<24} {'endpoint':<16} {'calls':>8} {'errors':>8}")
    for row in totals:
        click.echo(
            f"{row.provider:<10} {row.generator:<24} {row.endpoint:<16} "
            f"{row.calls:>8} {row.errors:>8}"
        )
    click.echo(
        f"{'total':<52} {sum(r.calls for r in totals):>8} {sum(r.errors for r in totals):>8}"
    )


def _cost_and_budgets(
    database: Any, start: datetime | None, generator: str | None, period: str | None, budgets: bool
) -> None:
    from signalgen.config.operations import get_operations_config
    from signalgen.marketdata.costs import budget_status, cost_by_period

    config = get_operations_config()
    if period is not None:
        rows = cost_by_period(
            database,
            config,
            period="hour" if period == "hour" else "day",
            since=start,
            generator=generator,
        )
        if not rows:
            click.echo("no provider calls recorded")
        else:
            stamp = "%Y-%m-%d %H:00" if period == "hour" else "%Y-%m-%d"
            click.echo(
                f"{period:<16} {'provider':<10} {'generator':<24} {'calls':>8} "
                f"{'errors':>8} {'cost ' + config.currency:>12}"
            )
            for row in rows:
                click.echo(
                    f"{row.period_start.strftime(stamp):<16} {row.provider:<10} "
                    f"{row.generator:<24} {row.calls:>8} {row.errors:>8} "
                    f"{row.cost:>12.4f}"
                )
            click.echo(
                f"{'total':<52} {sum(r.calls for r in rows):>8} "
                f"{sum(r.errors for r in rows):>8} {sum(r.cost for r in rows):>12.4f}"
            )
    if budgets:
        from signalgen.interfaces.cli.output import table

        names = [generator] if generator else _generator_names(database)
        cells = [
            [
                item.generator,
                str(item.calls_this_hour),
                _limit(item.hour_limit),
                str(item.calls_today),
                _limit(item.day_limit),
                f"{item.cost_today:.4f}",
                f"PAUSED ({item.paused} budget spent)" if item.paused else "ok",
            ]
            for item in budget_status(database, config, generators=names)
        ]
        headers = [
            "generator",
            "calls this hour",
            "hour limit",
            "calls today",
            "day limit",
            f"cost today {config.currency}",
            "state",
        ]
        for text in table(headers, cells, right=frozenset({1, 2, 3, 4, 5})):
            click.echo(text)


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def _generator_names(database: Any) -> list[str]:
    """Configured generators, plus any that has calls recorded."""
    from sqlalchemy import select

    from signalgen.storage.models import ProviderCall

    names: set[str] = set()
    try:
        from signalgen.config import load_generators
        from signalgen.settings import get_settings

        names.update(load_generators(get_settings()))
    except Exception:  # noqa: S110 (a broken generators file must not hide the usage report)
        pass
    with database.session() as session:
        names.update(session.execute(select(ProviderCall.generator).distinct()).scalars())
    return sorted(names)
