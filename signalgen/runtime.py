"""The generate flow as plain code: per-process resources and `run_generator`.

A Celery task is only the edge around this module (see tasks/signals.py); tests, `signalgen dev`
and one-off runs call the same functions. Resources are built explicitly, once per process
(Celery prefork children included, keyed by pid), never at import time.

    load inputs → generator.compute (wrapped) → validate → record (one transaction) → publish
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from generators.base import BaseSignalGenerator, Tick
from schemas.signal import Signal
from signalgen.bus import KombuPublisher, SignalPublisher, publish_recorded, record_signals
from signalgen.config import ConfigError, GeneratorSpec, enabled_generators
from signalgen.logs import log_event
from signalgen.settings import Settings, get_settings
from signalgen.storage import Database, get_database

logger = logging.getLogger("signalgen.runtime")


class GeneratorFailed(RuntimeError):
    """A generator's own code raised or returned garbage. Logged and counted, never retried."""


@dataclass
class Resources:
    """What a generate run needs, built once per process and passed explicitly."""

    settings: Settings
    database: Database
    specs: dict[str, GeneratorSpec]
    publisher: SignalPublisher
    #: Builds the bar store on first use (only price generators need it).
    bar_store_factory: Callable[[Database], Any] | None = None
    #: A live market-data source (Finnhub) or None: bars then come from the store alone.
    market_source: Any | None = None
    #: Per-process counters: generator_failed, signals_rejected, ... (also logged as events).
    counters: Counter[str] = field(default_factory=Counter)
    #: Generator name → why its last live-data refresh failed (cleared by the next run).
    refresh_errors: dict[str, str] = field(default_factory=dict)
    _bar_store: Any | None = field(default=None, init=False, repr=False)

    def spec(self, name: str) -> GeneratorSpec:
        try:
            return self.specs[name]
        except KeyError:
            known = ", ".join(sorted(self.specs)) or "none"
            raise ConfigError(
                f"{self.settings.generators_config_path}: no enabled generator named {name!r} "
                f"(enabled: {known})"
            ) from None

    @property
    def bar_store(self) -> Any:
        if self._bar_store is None:
            factory = self.bar_store_factory or _default_bar_store
            self._bar_store = factory(self.database)
        return self._bar_store

    def close(self) -> None:
        self.publisher.close()


def _default_bar_store(database: Database) -> Any:
    from signalgen.marketdata import BarStore

    return BarStore(database)


def _market_source(settings: Settings, database: Database) -> Any | None:
    """The Finnhub source when FINNHUB_API_KEY is set, else None (bars come from the store)."""
    if settings.finnhub_api_key is None:
        return None
    from signalgen import marketdata

    factory = getattr(marketdata, "source_from_settings", None)
    if factory is None:
        log_event(
            logger,
            "market_source_unavailable",
            logging.WARNING,
            reason="signalgen.marketdata has no source_from_settings(); using stored bars",
        )
        return None
    return factory(settings, database)


def build_resources(
    settings: Settings | None = None,
    *,
    specs: dict[str, GeneratorSpec] | None = None,
    publisher: SignalPublisher | None = None,
    database: Database | None = None,
    bar_store_factory: Callable[[Database], Any] | None = None,
    market_source: Any | None = None,
) -> Resources:
    """Build a process's resources. Raises ConfigError (file and field) on bad configuration."""
    settings = settings or get_settings()
    database = database or get_database(settings.database_url)
    specs = enabled_generators(settings) if specs is None else specs
    publisher = publisher or KombuPublisher(settings.broker_url)
    if market_source is None and any(
        s.generator.inputs in ("bars", "news") for s in specs.values()
    ):
        market_source = _market_source(settings, database)
    return Resources(
        settings=settings,
        database=database,
        specs=specs,
        publisher=publisher,
        bar_store_factory=bar_store_factory,
        market_source=market_source,
    )


_resources: dict[int, Resources] = {}
_resources_lock = threading.Lock()


def get_resources() -> Resources:
    """This process's resources, built on first use (a forked child builds its own)."""
    pid = os.getpid()
    with _resources_lock:
        resources = _resources.get(pid)
        if resources is None:
            resources = _resources[pid] = build_resources()
        return resources


def close_resources() -> None:
    with _resources_lock:
        resources = _resources.pop(os.getpid(), None)
    if resources is not None:
        resources.close()


@dataclass(frozen=True)
class RunResult:
    """What one generate run did. Small and JSON-friendly (it is a task's return value)."""

    generator: str
    tick: str
    computed: int = 0
    rejected: int = 0
    new: int = 0
    published: int = 0
    pending: int = 0
    failed: str | None = None
    seconds: float = 0.0
    #: Bars the run had (fewest of its tickers) and bars it needs: generator health.
    bars: int | None = None
    needed: int | None = None
    provider_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__dataclass_fields__}


def load_inputs(spec: GeneratorSpec, resources: Resources) -> Any:
    """What `compute` gets: None, the generator's tickers' last `lookback()` daily bars, their
    recent news items ("news"), or recently recorded signals ("signals").

    A failing refresh from the live source is logged and the stored bars are used: a cross is
    still found on the next check, since a generator looks back over several bars.
    """
    generator = spec.generator
    if generator.inputs == "none":
        return None
    if generator.inputs == "bars":
        store = resources.bar_store
        needed = generator.lookback()
        if resources.market_source is not None:
            from signalgen.marketdata import refresh_bars
            from signalgen.marketdata.calendar import market_calendar

            try:
                refresh_bars(
                    store,
                    resources.market_source,
                    generator.tickers,
                    needed,
                    spec.name,
                    calendar=market_calendar(resources.settings.market_calendar),
                    budget_seconds=resources.settings.market_data_budget_seconds,
                )
            except Exception as exc:
                resources.counters["bars_refresh_failed"] += 1
                resources.refresh_errors[spec.name] = f"{type(exc).__name__}: {exc}"[:300]
                log_event(
                    logger,
                    "bars_refresh_failed",
                    logging.WARNING,
                    generator=spec.name,
                    reason=f"{type(exc).__name__}: {exc}",
                )
        return store.load_bars(generator.tickers, needed)
    # News and recent-signal inputs: loaders live at the edge in signalgen.ingress.
    if generator.inputs == "news":
        from signalgen.ingress.news import load_news

        return load_news(spec, resources)
    if generator.inputs == "signals":
        from signalgen.ingress.recent_signals import load_recent_signals

        return load_recent_signals(spec, resources)
    raise ConfigError(
        f"{resources.settings.generators_config_path}: generators.{spec.name}: inputs "
        f"{generator.inputs!r} are not served by the live runner"
    )


def _history(spec: GeneratorSpec, data: Any) -> tuple[int | None, int | None]:
    """(bars held by the ticker with the fewest, bars needed) of a bars run; else (None, None)."""
    if spec.generator.inputs != "bars" or data is None or not hasattr(data, "close"):
        return None, None
    import numpy as np

    close = np.asarray(data.close, dtype=float)
    have = int(np.isfinite(close).sum(axis=1).min()) if close.size else 0
    return have, int(spec.generator.lookback())


def safe_compute(spec: GeneratorSpec, data: Any, tick: Tick) -> list[Any]:
    """Call the generator's `compute`; any exception becomes GeneratorFailed with its reason."""
    try:
        output = spec.generator.compute(data, tick)
    except Exception as exc:
        raise GeneratorFailed(f"{type(exc).__name__}: {exc}") from exc
    if output is None:
        return []
    if not isinstance(output, list | tuple):
        raise GeneratorFailed(f"compute returned {type(output).__name__}, expected a list")
    return list(output)


def validate_output(spec: GeneratorSpec, output: list[Any]) -> tuple[list[Signal], list[str]]:
    """Keep what is a valid Signal from this generator; return (valid, reasons for the rest).

    Signals are re-validated (a model built with `model_construct` skips validation), and must
    carry the generator's own name as `source` (which is what their identity derives from).
    """
    valid: list[Signal] = []
    reasons: list[str] = []
    for index, item in enumerate(output):
        if not isinstance(item, Signal):
            reasons.append(f"[{index}] is {type(item).__name__}, not a Signal")
            continue
        try:
            signal = Signal.model_validate(item.model_dump())
        except ValidationError as exc:
            reasons.append(f"[{index}] invalid: {exc.errors()[0]['msg']}")
            continue
        if signal.source != spec.name:
            reasons.append(f"[{index}] source {signal.source!r} is not {spec.name!r}")
            continue
        valid.append(signal)
    return valid, reasons


def _updates_recorded(generator: BaseSignalGenerator[Any]) -> bool:
    return type(generator).supersedes is not BaseSignalGenerator.supersedes


def _refresh_recorded(
    session: Session, spec: GeneratorSpec, tick: Tick, seen: list[Signal]
) -> None:
    """Signals recorded before that this run found grown (a confluence composite a later
    source joined): the stored row takes the new version; nothing is published again."""
    from signalgen.bus.recorder import refresh_recorded

    for signal in refresh_recorded(session, seen, spec.generator.supersedes):
        log_event(
            logger,
            "signal_updated",
            logging.INFO,
            generator=spec.name,
            tick=tick.key,
            signal_id=str(signal.signal_id),
            tickers=list(signal.tickers),
        )


def run_generator(spec: GeneratorSpec, tick: Tick, resources: Resources) -> RunResult:
    """One check of one generator at `tick`: compute, record what is new, publish it.

    Raises only what the caller should retry (database or data-source outages) or ConfigError.
    A generator that raises, or returns garbage, is logged with its reason and counted.
    """
    started = time.monotonic()
    resources.refresh_errors.pop(spec.name, None)
    data = load_inputs(spec, resources)
    have, needed = _history(spec, data)
    provider_error = resources.refresh_errors.get(spec.name)
    try:
        output = safe_compute(spec, data, tick)
    except GeneratorFailed as exc:
        resources.counters["generator_failed"] += 1
        log_event(
            logger,
            "generator_failed",
            logging.ERROR,
            generator=spec.name,
            tick=tick.key,
            reason=str(exc),
            failures=resources.counters["generator_failed"],
        )
        return RunResult(
            spec.name,
            tick.key,
            failed=str(exc),
            seconds=round(time.monotonic() - started, 4),
            bars=have,
            needed=needed,
            provider_error=provider_error,
        )
    signals, reasons = validate_output(spec, output)
    if signals and spec.generator.inputs == "bars":  # flagged when computed from sample bars
        from signalgen.marketdata.sample import mark_sample_signals

        signals = mark_sample_signals(resources.bar_store, signals, data)
    for reason in reasons:
        resources.counters["signals_rejected"] += 1
        log_event(
            logger,
            "signal_rejected",
            logging.WARNING,
            generator=spec.name,
            tick=tick.key,
            reason=reason,
        )
    with resources.database.session() as session:
        new = record_signals(session, signals)
        if len(new) < len(signals) and _updates_recorded(spec.generator):
            recorded = {s.signal_id for s in new}
            seen = [s for s in signals if s.signal_id not in recorded]
            _refresh_recorded(session, spec, tick, seen)
    outcome = publish_recorded(resources.database, resources.publisher, new)
    result = RunResult(
        spec.name,
        tick.key,
        computed=len(output),
        rejected=len(reasons),
        new=len(new),
        published=outcome.published,
        pending=outcome.failed,
        seconds=round(time.monotonic() - started, 4),
        bars=have,
        needed=needed,
        provider_error=provider_error,
    )
    log_event(logger, "generator_ran", logging.INFO, **result.as_dict())
    return result
