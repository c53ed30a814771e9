"""Prometheus metrics of the whole bus, collected at scrape time from where the truth lives.

One exporter (the HTTP service's `/metrics`), not one per worker: every number below is already
durable in PostgreSQL, Redis or the broker, so reading it at scrape time gives the same answer
whichever worker did the work, survives worker restarts, and needs no prometheus_client
multiprocess directory shared between prefork children.

- signals emitted per generator and type         `signals` (source, signal_type)
- dispatch outcome per signal                     `signals.dispatch_status`
- executions by status (succeeded, failed, ...)   `executions.status`
- deferrals / rate-limited per owner              Redis counters of `signalgen.ops.ratelimit`
- publish → execution-start latency histogram    `executions.latency_seconds`
- queue depths                                    the broker (passive queue declare)
- outbox backlog and its oldest age               `signals.published_at IS NULL`
- dead letters by stage, status, reason kind      `dead_letters`
- provider calls, errors and estimated cost       `provider_calls` x `cost_per_call`

Each section is collected independently: one that fails (Redis down) is reported by
`signalgen_collector_up{section=...} 0` and logged, and the others are still exported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from signalgen.config.operations import OperationsConfig
from signalgen.logs import log_event
from signalgen.ops.broker import DEFAULT_QUEUES, queue_depths
from signalgen.ops.dlq import counts_by
from signalgen.ops.ratelimit import DEFERRED_COUNTER, LIMITED_COUNTER
from signalgen.storage import Database
from signalgen.storage.models import Execution, ProviderCall, SignalRecord

logger = logging.getLogger("signalgen.ops.metrics")

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class BusCollector(Collector):
    """Everything in the module docstring; register on a `CollectorRegistry`."""

    def __init__(
        self,
        db: Database,
        *,
        redis_client: Any | None,
        broker_url: str | None,
        config: OperationsConfig,
        queues: Sequence[str] = DEFAULT_QUEUES,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.redis = redis_client
        self.broker_url = broker_url
        self.config = config
        self.queues = tuple(queues)
        self._clock = clock

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time; no describe-time database access

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "signalgen_collector_up",
            "1 when the section was collected in this scrape",
            labels=["section"],
        )
        seconds = GaugeMetricFamily(
            "signalgen_collector_duration_seconds",
            "Time spent collecting each section",
            labels=["section"],
        )
        sections: list[tuple[str, Callable[[], list[Metric]]]] = [
            ("signals", self._signals),
            ("executions", self._executions),
            ("latency", self._latency),
            ("outbox", self._outbox),
            ("dead_letters", self._dead_letters),
            ("providers", self._providers),
            ("rate_limits", self._rate_limits),
            ("queues", self._queues),
        ]
        for name, section in sections:
            started = time.perf_counter()
            try:
                metrics = section()
            except Exception as exc:
                up.add_metric([name], 0)
                log_event(
                    logger,
                    "metrics_section_failed",
                    logging.WARNING,
                    section=name,
                    reason=f"{type(exc).__name__}: {exc}"[:300],
                )
                metrics = []
            else:
                up.add_metric([name], 1)
            seconds.add_metric([name], time.perf_counter() - started)
            yield from metrics
        yield up
        yield seconds

    # -- sections ---------------------------------------------------------------------------

    def _signals(self) -> list[Metric]:
        emitted = CounterMetricFamily(
            "signalgen_signals_emitted",
            "Signals recorded, per generator (source) and type",
            labels=["generator", "signal_type"],
        )
        dispatched = CounterMetricFamily(
            "signalgen_signals_dispatch",
            "Signals by dispatch outcome (pending, dispatched, unmatched)",
            labels=["outcome"],
        )
        with self.db.session() as session:
            for source, kind, count in session.execute(
                select(SignalRecord.source, SignalRecord.signal_type, func.count()).group_by(
                    SignalRecord.source, SignalRecord.signal_type
                )
            ):
                emitted.add_metric([source, kind], count)
            for status, count in session.execute(
                select(SignalRecord.dispatch_status, func.count()).group_by(
                    SignalRecord.dispatch_status
                )
            ):
                dispatched.add_metric([status], count)
        return [emitted, dispatched]

    def _executions(self) -> list[Metric]:
        by_status = GaugeMetricFamily(
            "signalgen_executions",
            "Executions by current status (claimed, enqueued, running, "
            "succeeded, failed, rate_limited, skipped)",
            labels=["status"],
        )
        with self.db.session() as session:
            for status, count in session.execute(
                select(Execution.status, func.count()).group_by(Execution.status)
            ):
                by_status.add_metric([status], count)
        return [by_status]

    def _latency(self) -> list[Metric]:
        latency = Execution.latency_seconds
        columns = [func.sum(case((latency <= bound, 1), else_=0)) for bound in LATENCY_BUCKETS]
        statement = select(
            func.count(latency), func.coalesce(func.sum(latency), 0.0), *columns
        ).where(latency.is_not(None))
        with self.db.session() as session:
            row = session.execute(statement).one()
        count, total = int(row[0] or 0), float(row[1] or 0.0)
        buckets = [
            (repr(bound), int(value or 0))
            for bound, value in zip(LATENCY_BUCKETS, row[2:], strict=True)
        ]
        buckets.append(("+Inf", count))
        histogram = HistogramMetricFamily(
            "signalgen_publish_to_execution_seconds",
            "Seconds from a signal's publication (or a replay's enqueue, or a periodic slot's "
            "start) to its execution's start",
            buckets=buckets,
            sum_value=total,
        )
        return [histogram]

    def _outbox(self) -> list[Metric]:
        with self.db.session() as session:
            count, oldest = session.execute(
                select(func.count(), func.min(SignalRecord.recorded_at)).where(
                    SignalRecord.published_at.is_(None)
                )
            ).one()
        backlog = GaugeMetricFamily(
            "signalgen_outbox_backlog",
            "Recorded signals the broker has not taken yet",
            value=int(count or 0),
        )
        age = 0.0
        if oldest is not None:
            age = max(0.0, (self._clock() - oldest.astimezone(UTC)).total_seconds())
        oldest_age = GaugeMetricFamily(
            "signalgen_outbox_oldest_age_seconds", "Age of the oldest unpublished signal", value=age
        )
        return [backlog, oldest_age]

    def _dead_letters(self) -> list[Metric]:
        gauge = GaugeMetricFamily(
            "signalgen_dead_letters",
            "Dead letters by stage, status and reason kind",
            labels=["stage", "status", "reason"],
        )
        totals: dict[tuple[str, str, str], int] = {}
        for stage, status, reason, count in counts_by(self.db):
            key = (stage, status, reason_label(reason))
            totals[key] = totals.get(key, 0) + count
        for labels, count in sorted(totals.items()):
            gauge.add_metric(list(labels), count)
        return [gauge]

    def _providers(self) -> list[Metric]:
        calls = CounterMetricFamily(
            "signalgen_provider_calls",
            "Data-provider calls",
            labels=["provider", "generator", "endpoint"],
        )
        errors = CounterMetricFamily(
            "signalgen_provider_errors",
            "Data-provider calls that failed",
            labels=["provider", "generator", "endpoint"],
        )
        cost = CounterMetricFamily(
            "signalgen_provider_cost",
            f"Estimated provider cost ({self.config.currency})",
            labels=["provider", "generator"],
        )
        per_generator: dict[tuple[str, str], int] = {}
        with self.db.session() as session:
            for provider, generator, endpoint, n, e in session.execute(
                select(
                    ProviderCall.provider,
                    ProviderCall.generator,
                    ProviderCall.endpoint,
                    func.sum(ProviderCall.calls),
                    func.sum(ProviderCall.errors),
                ).group_by(ProviderCall.provider, ProviderCall.generator, ProviderCall.endpoint)
            ):
                calls.add_metric([provider, generator, endpoint], int(n or 0))
                errors.add_metric([provider, generator, endpoint], int(e or 0))
                key = (provider, generator)
                per_generator[key] = per_generator.get(key, 0) + int(n or 0)
        for (provider, generator), n in sorted(per_generator.items()):
            cost.add_metric([provider, generator], n * self.config.cost_of(provider))
        return [calls, errors, cost]

    def _rate_limits(self) -> list[Metric]:
        deferred = CounterMetricFamily(
            "signalgen_executions_deferred",
            "Executions held back by an owner's limit and re-enqueued with a countdown",
            labels=["owner"],
        )
        limited = CounterMetricFamily(
            "signalgen_executions_rate_limited",
            "Executions recorded rate_limited (for a later replay)",
            labels=["owner"],
        )
        if self.redis is None:
            return [deferred, limited]
        for family, key in ((deferred, DEFERRED_COUNTER), (limited, LIMITED_COUNTER)):
            for owner, count in sorted(self.redis.hgetall(key).items()):
                family.add_metric([_text(owner)], int(count))
        return [deferred, limited]

    def _queues(self) -> list[Metric]:
        gauge = GaugeMetricFamily(
            "signalgen_queue_depth", "Messages waiting in a broker queue", labels=["queue"]
        )
        if self.broker_url is None:
            return [gauge]
        for name, depth in queue_depths(self.broker_url, self.queues).items():
            gauge.add_metric([name], depth)
        return [gauge]


#: This service's Celery task names: the only task names a label may carry. Any process that
#: can publish to a task queue can name any task; `/metrics` is unauthenticated.
OWN_TASKS = frozenset(
    {
        "signals.generate",
        "signals.dispatch",
        "signals.dispatch_batch",
        "signals.replay",
        "signals.outbox_sweep",
        "signals.repair",
        "pipelines.execute",
        "pipelines.fire_periodic",
        "marketdata.backfill",
    }
)
_UNKNOWN_TASK = "unknown task"


def reason_label(kind: str) -> str:
    """A dead letter's reason kind as a label: `unknown task 'x' refused` keeps `x` only when
    it is one of ours (`unknown task 'other' refused` otherwise), so a stranger's task names
    never become label values."""
    if not kind.startswith(_UNKNOWN_TASK):
        return kind
    name = kind[len(_UNKNOWN_TASK) :].strip().removesuffix("refused").strip().strip("'\"")
    return f"{_UNKNOWN_TASK} {name if name in OWN_TASKS else 'other'!r} refused"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
