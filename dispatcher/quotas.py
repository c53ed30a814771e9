"""Per-user quotas on pipelines, from `operations.json` `quotas`
(`signalgen.config.operations.Quotas`).

Checked by `dispatcher.admission` on every write path (HTTP API, CLI, imports), inside the
write's transaction, so a refused write (or a refused import, as a whole) leaves nothing behind:

- `tickers_per_scanner` (default 500): one pipeline's explicit tickers. Over it the pipeline is
  an invalid value, like a schema limit: `Refused(..., quota=False)`, HTTP 422 on
  `scanner.tickers`.
- `pipelines_per_user` (default 100): pipelines (signal and periodic) an owner has.
- `scanner_entries_per_user` (default 5,000): explicit tickers summed over an owner's pipelines
  (a watchlist scanner counts 0: the operator's watchlist bounds it). What the match index
  holds for a user grows with this.
  Both are totals the write would take past the limit: `Refused(..., quota=True)`, HTTP 409,
  on `owner` and `scanner.tickers` respectively.

Every limit is named in the reason with the setting that changes it; None means unlimited.
The per-minute API write limit (`api_writes_per_minute`) is an HTTP concern:
`signalgen.interfaces.http.quotas`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select

from dispatcher.admission import Refused
from schemas.pipeline import PipelineSpec
from signalgen.config.operations import Quotas


def current_quotas() -> Quotas:
    from signalgen.config.operations import get_operations_config

    return get_operations_config().quotas


def _setting(name: str) -> str:
    return f"(operations.json quotas.{name})"


def spec_refusal(spec: PipelineSpec, quotas: Quotas) -> Refused | None:
    """Why one pipeline alone is over a per-pipeline limit, or None."""
    limit = quotas.tickers_per_scanner
    if limit is not None and spec.scanner is not None and len(spec.scanner.tickers) > limit:
        return Refused(
            "scanner.tickers",
            f"tickers_per_scanner: this scanner lists {len(spec.scanner.tickers):,} tickers, "
            f"the limit is {limit:,} {_setting('tickers_per_scanner')}",
        )
    return None


def totals_refusal(owner: str, pipelines: int, entries: int, quotas: Quotas) -> Refused | None:
    """Why an owner's totals after a write (`pipelines`, scanner `entries`) are over quota."""
    limit = quotas.pipelines_per_user
    if limit is not None and pipelines > limit:
        return Refused(
            "owner",
            f"pipelines_per_user: {owner} would have {pipelines:,} pipelines, "
            f"the limit is {limit:,} {_setting('pipelines_per_user')}",
            quota=True,
        )
    limit = quotas.scanner_entries_per_user
    if limit is not None and entries > limit:
        return Refused(
            "scanner.tickers",
            f"scanner_entries_per_user: {owner}'s scanners would list {entries:,} tickers in "
            f"all, the limit is {limit:,} {_setting('scanner_entries_per_user')}",
            quota=True,
        )
    return None


def check_spec(spec: PipelineSpec, quotas: Quotas | None = None) -> None:
    """Refused when one pipeline alone is over a per-pipeline quota."""
    refusal = spec_refusal(spec, quotas or current_quotas())
    if refusal is not None:
        raise refusal


def owner_totals(session: Any, owners: Iterable[str]) -> dict[str, tuple[int, int]]:
    """owner -> (pipelines, explicit scanner tickers) as the session sees them (one query)."""
    from signalgen.storage.models import Pipeline

    wanted = sorted(set(owners))
    if not wanted:
        return {}
    entries = func.coalesce(func.sum(func.json_array_length(Pipeline.scanner["tickers"])), 0)
    rows = session.execute(
        select(Pipeline.owner, func.count(), entries)
        .where(Pipeline.owner.in_(wanted))
        .group_by(Pipeline.owner)
    ).all()
    return {owner: (int(count), int(total)) for owner, count, total in rows}


def check_totals(session: Any, owners: set[str], quotas: Quotas | None = None) -> None:
    """Refused when an owner's totals (after the write, flushed, not committed) are over quota."""
    quotas = quotas or current_quotas()
    if quotas.pipelines_per_user is None and quotas.scanner_entries_per_user is None:
        return
    totals = owner_totals(session, owners)
    for owner in sorted(owners):
        pipelines, entries = totals.get(owner, (0, 0))
        refusal = totals_refusal(owner, pipelines, entries, quotas)
        if refusal is not None:
            raise refusal
