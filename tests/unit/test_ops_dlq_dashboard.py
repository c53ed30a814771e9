"""Dead-letter store operations, dashboard arithmetic and the metrics collector (SQLite)."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from typing import Any

import fakeredis
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from schemas.signal import Bias
from signalgen.config.operations import Budget, Budgets, OperationsConfig
from signalgen.interfaces.http.dashboard import render
from signalgen.marketdata.store import BarRow, BarStore
from signalgen.marketdata.usage import record_call
from signalgen.ops import dlq, health
from signalgen.ops.dashboard import LiveSources, dashboard_data, hit_rates, percentile, score
from signalgen.ops.metrics import BusCollector
from signalgen.ops.ratelimit import DEFERRED_COUNTER
from signalgen.storage import Database
from signalgen.storage.models import DeadLetter, Execution
from tests.support.ops import T0, add_execution, add_pipeline, make_signal, record


class SentTasks:
    """What requeue hands to Celery's send_task (recorded; a worker is not needed here)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any], dict[str, Any], dict[str, Any]]] = []

    def __call__(
        self,
        name: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        self.calls.append((name, list(args or []), dict(kwargs or {}), options))


def dead(db: Database, **fields: Any) -> int:
    values = {
        "stage": "dispatch",
        "reason": "invalid signal: tickers.0: bad",
        "body": b"{}",
        "content_type": "application/json",
        "headers": {},
        **fields,
    }
    with db.session() as session:
        row = DeadLetter(**values)
        session.add(row)
        session.flush()
        return int(row.id)


def test_list_filters_and_purge(sqlite_db: Database) -> None:
    a = dead(sqlite_db, reason="body is not UTF-8 text")
    b = dead(sqlite_db, stage="execute", reason="execution failed after 1 attempt(s): 500")
    c = dead(sqlite_db, received_at=T0)
    assert [r.id for r in dlq.list_dead_letters(sqlite_db, dlq.DlqFilter())] == [c, b, a]
    assert [r.id for r in dlq.list_dead_letters(sqlite_db, dlq.DlqFilter(stage="execute"))] == [b]
    assert [
        r.id for r in dlq.list_dead_letters(sqlite_db, dlq.DlqFilter(reason_contains="UTF-8"))
    ] == [a]
    assert [
        r.id
        for r in dlq.list_dead_letters(sqlite_db, dlq.DlqFilter(until=T0 + timedelta(seconds=1)))
    ] == [c]
    assert dlq.purge(sqlite_db, dlq.DlqFilter(ids=(a, c))) == 2
    assert dlq.count_dead_letters(sqlite_db, dlq.DlqFilter(status=None)) == 1


def test_requeue_sends_each_row_back_once_through_its_path(sqlite_db: Database) -> None:
    signal = make_signal("AAPL", 1)
    record(sqlite_db, [signal])
    pipeline = add_pipeline(sqlite_db)
    execution = add_execution(sqlite_db, pipeline, signal, status="failed")
    assert dlq.dead_letter_failed_execution(sqlite_db, execution)
    assert not dlq.dead_letter_failed_execution(sqlite_db, 999)
    raw = dead(sqlite_db, body=b'{"signal_id": 1}')
    task = dead(
        sqlite_db,
        stage="task",
        reason="OperationalError: db away",
        body=json.dumps(
            {"task": "signals.dispatch", "args": [{"body": "x"}], "kwargs": {}}
        ).encode(),
    )
    sent = SentTasks()
    senders = dlq.Senders(sent)
    result = dlq.requeue(sqlite_db, dlq.DlqFilter(), senders)
    assert result.as_dict() == {"requeued": 3, "skipped": 0, "errors": 0}
    names = sorted(c[0] for c in sent.calls)
    assert names == ["pipelines.execute", "signals.dispatch", "signals.dispatch"]
    execute = next(c for c in sent.calls if c[0] == "pipelines.execute")
    assert execute[1] == [execution] and execute[3] == {"queue": "pipelines"}
    envelope = next(
        c
        for c in sent.calls
        if c[0] == "signals.dispatch" and c[1][0].get("body") == '{"signal_id": 1}'
    )
    assert envelope[3] == {"queue": "dispatch"}
    with sqlite_db.session() as session:
        assert session.get(Execution, execution).status == "enqueued"
        statuses = {
            r.id: (r.status, r.attempts) for r in session.execute(select(DeadLetter)).scalars()
        }
    assert statuses[raw] == ("requeued", 2) and statuses[task][0] == "requeued"
    # Requeued rows are not dead any more: a second requeue sends nothing.
    assert dlq.requeue(sqlite_db, dlq.DlqFilter(), senders).requeued == 0
    assert len(sent.calls) == 3


def test_requeue_failure_leaves_the_row_dead_with_why(sqlite_db: Database) -> None:
    row = dead(sqlite_db)

    def broker_down(*_: Any, **__: Any) -> None:
        raise ConnectionError("broker refused")

    result = dlq.requeue(sqlite_db, dlq.DlqFilter(), dlq.Senders(broker_down))
    assert result.errors == 1
    stored = dlq.get_dead_letter(sqlite_db, row)
    assert stored is not None and stored.status == "dead"
    assert "requeue failed: ConnectionError: broker refused" in stored.reason


def test_body_text_never_decodes_binary() -> None:
    row = DeadLetter(body=b"\x80\x04\x95pickle", reason="x", stage="dispatch")
    assert dlq.body_text(row) == "hex:" + b"\x80\x04\x95pickle".hex()
    assert (
        dlq.reason_kind("content type 'application/x-python-serialize' refused")
        == "content type refused"
    )
    assert dlq.reason_kind("invalid signal: tickers.0: Value error") == "invalid signal"


# -- dashboard ------------------------------------------------------------------------------


def test_score_and_percentile() -> None:
    assert score("BULLISH", 100.0, 110.0) == (True, pytest.approx(0.1))  # type: ignore[comparison-overlap]
    assert score("BEARISH", 100.0, 110.0) == (False, pytest.approx(-0.1))  # type: ignore[comparison-overlap]
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0


def test_hit_rate_is_bias_aware_and_waits_for_the_later_bar(sqlite_db: Database) -> None:
    store = BarStore(sqlite_db)
    start = date(2026, 3, 2)
    closes = [100, 101, 102, 103, 104, 105, 104, 103, 102, 101]
    store.upsert_bars(
        "AAPL",
        [BarRow(start + timedelta(days=i), c, c, c, c, 1.0) for i, c in enumerate(closes)],
        source="test",
    )
    at = datetime(2026, 3, 2, tzinfo=UTC)
    record(
        sqlite_db,
        [
            make_signal("AAPL", 0, at=at, source="up", bias=Bias.BULLISH),  # 100→103 hit
            make_signal("AAPL", 0, at=at + timedelta(days=5), source="up"),  # 105→102 miss
            make_signal(
                "AAPL", 0, at=at + timedelta(days=5), source="down", bias=Bias.BEARISH
            ),  # hit
            make_signal(
                "AAPL", 0, at=at + timedelta(days=8), source="down", bias=Bias.BEARISH
            ),  # pending
            make_signal("AAPL", 1, at=at, source="down", bias=Bias.NEUTRAL),  # neutral
            make_signal("MSFT", 0, at=at, source="down", bias=Bias.BEARISH),  # no bars
        ],
    )
    rates = {h.generator: h.as_dict() for h in hit_rates(sqlite_db, horizon=3)}
    assert rates["up"]["scored"] == 2 and rates["up"]["hits"] == 1
    assert rates["up"]["hit_rate"] == 0.5
    assert (
        rates["down"]["scored"],
        rates["down"]["hits"],
        rates["down"]["pending"],
        rates["down"]["neutral"],
        rates["down"]["no_bars"],
    ) == (1, 1, 1, 1, 1)


def test_dashboard_data_and_page(sqlite_db: Database) -> None:
    now = T0 + timedelta(hours=1)
    record(sqlite_db, [make_signal("AAPL", i) for i in range(3)] + [make_signal("MSFT", 7)])
    pipeline = add_pipeline(sqlite_db)
    with sqlite_db.session() as session:
        session.execute(update(Execution).values(latency_seconds=0.5))
    add_execution(sqlite_db, pipeline, make_signal("AAPL", 0), status="succeeded")
    dead(sqlite_db, reason="body is not UTF-8 text")
    record_call(
        sqlite_db, provider="finnhub", generator="test_gen", endpoint="quote", calls=7, at=T0
    )
    data = dashboard_data(sqlite_db, OperationsConfig(cost_per_call={"finnhub": 0.5}), now=now)
    hours = data["signals"]["days"]
    assert len(hours) == 7 * 24 and hours[-2:] == ["2026-03-02T14:00Z", "2026-03-02T15:00Z"]
    assert data["signals"]["by_type"] == {"golden_cross": [0] * 166 + [4, 0]}
    assert data["signals"]["by_ticker"] == {"AAPL": [0] * 166 + [3, 0], "MSFT": [0] * 166 + [1, 0]}
    assert data["signals"]["by_generator"]["test_gen"]["count"] == 4
    assert data["executions"] == {"succeeded": 1}
    assert data["executions_over_time"]["by_status"]["succeeded"][-2] == 1
    assert data["outbox"]["count"] == 4  # recorded, never published
    assert data["dead_letters"]["by_reason"] == {"body is not UTF-8 text": 1}
    assert data["cost"][0]["calls"] == 7 and data["cost"][0]["cost"] == 3.5
    assert data["cost_over_time"]["by_generator"]["test_gen"][-2] == 3.5
    (row,) = data["health"]["rows"]
    assert row["generator"] == "test_gen" and row["state"] == "not_configured"
    assert row["signals"] == 4 and row["last_signal"] == "2026-03-02T14:07:00+00:00"
    assert data["queues"]["error"] == "no broker configured"
    page = render({**data, "currency": "</script><b>"})
    assert "</script><b>" not in page and "__DASHBOARD_DATA__" not in page


def test_overview_and_dead_letter_panel_count_the_same_rows(sqlite_db: Database) -> None:
    """The issue saw 3 in the overview and 4 in the panel: the panel counted requeued rows."""
    for _ in range(3):
        dead(sqlite_db, reason="body is not UTF-8 text")
    requeued = dead(sqlite_db, reason="invalid signal: tickers.0: bad")
    with sqlite_db.session() as session:
        session.execute(
            update(DeadLetter).where(DeadLetter.id == requeued).values(status="requeued")
        )
    summary = dashboard_data(sqlite_db, OperationsConfig())["dead_letters"]
    assert summary["dead"] == 3 == sum(summary["by_reason"].values())
    assert summary["by_reason"] == {"body is not UTF-8 text": 3}
    assert summary["total"] == 4 and summary["by_status"] == {"dead": 3, "requeued": 1}


def test_time_series_read_only_the_window_and_survive_any_stored_time(
    sqlite_db: Database,
) -> None:
    now = datetime(2026, 3, 9, 12, 30, tzinfo=UTC)
    record(
        sqlite_db,
        [
            make_signal("AAPL", 0, at=datetime(1, 1, 1, tzinfo=UTC), source="old"),
            make_signal("AAPL", 0, at=datetime(9999, 12, 31, 23, 0, tzinfo=UTC), source="far"),
            make_signal("AAPL", 0, at=now - timedelta(days=8), source="before"),
            make_signal("AAPL", 0, at=now - timedelta(minutes=10), source="inside"),
        ],
    )
    pipeline = add_pipeline(sqlite_db)
    with sqlite_db.session() as session:
        for n, (latency, status) in enumerate(
            [
                (float("nan"), "failed"),
                (float("inf"), "failed"),
                (0.25, "succeeded"),
                (0.75, "failed"),
            ]
        ):
            session.add(
                Execution(
                    pipeline_id=pipeline,
                    idempotency_key=f"k{n}",
                    status=status,
                    latency_seconds=latency,
                    claimed_at=now - timedelta(minutes=5),
                    error=f"boom {n}",
                )
            )
        session.add(
            Execution(
                pipeline_id=pipeline,
                idempotency_key="old",
                status="failed",
                claimed_at=now - timedelta(days=30),
            )
        )
    data = dashboard_data(sqlite_db, OperationsConfig(), now=now)
    json.dumps(data, allow_nan=False)
    assert data["signals"]["total"] == 1
    assert list(data["signals"]["by_generator"]) == ["inside"]
    assert data["executions"] == {"failed": 3, "succeeded": 1}
    latency = data["executions_over_time"]["latency"]
    assert latency["p50"][-1] == 0.5 and latency["p99"][-1] == pytest.approx(0.745)
    assert all(v is None for v in latency["p50"][:-1])
    (failing,) = data["failures"]
    assert (failing["failed"], failing["executions"]) == (3, 4)
    assert failing["last_error"].startswith("boom") and failing["owner"] == "alice"
    # Every stored time in years 1..9999, whatever the window.
    wide = dashboard_data(sqlite_db, OperationsConfig(), now=now, days=36500)
    json.dumps(wide, allow_nan=False)
    assert wide["window"]["unit"] == "day" and wide["signals"]["total"] == 2


def test_generator_state_says_why_a_generator_is_silent() -> None:
    now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    ran = {"last_run_at": (now - timedelta(seconds=30)).isoformat(), "new": "0"}

    def state(record: dict[str, str], **kw: Any) -> str:
        return health.generator_state(record, interval_seconds=60, now=now, **kw).text

    assert state({}) == "never ran"
    assert state(ran) == "ok"
    assert state({**ran, "bars": "30", "needed": "205"}) == (
        "insufficient data: have 30, need 205 bars"
    )
    assert state({**ran, "bars": "300", "needed": "205"}) == "ok"
    assert state({**ran, "provider_error": "EntitlementError: 403"}) == (
        "provider paused: EntitlementError: 403"
    )
    assert state({**ran, "failed": "ZeroDivisionError: x"}) == "failing: ZeroDivisionError: x"
    assert state(ran, budget_paused="hour", budget_text=" (3 of 3 calls)") == (
        "budget: hour spent (3 of 3 calls)"
    )
    stale = {"last_run_at": (now - timedelta(seconds=600)).isoformat()}
    assert state(stale) == "late: no run for 600 s"
    assert state({"last_run_at": "garbage"}) == "never ran"


def test_health_records_written_by_runs_reach_the_table(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signalgen.config import load_generators
    from signalgen.settings import Settings

    specs = load_generators(Settings())
    name = next(n for n, s in specs.items() if s.entry.enabled and s.generator.inputs == "bars")
    client = fakeredis.FakeRedis()
    monkeypatch.setitem(health._clients, (os.getpid(), "redis://health-test"), client)
    now = datetime.now(UTC)
    health.record_run(
        "redis://health-test",
        {"generator": name, "new": 0, "bars": 12, "needed": 205},
        now - timedelta(seconds=5),
    )
    config = OperationsConfig(budgets=Budgets(generators={"budgeted": Budget(calls_per_hour=2)}))
    record_call(sqlite_db, provider="finnhub", generator="budgeted", endpoint="quote", calls=2)
    record(sqlite_db, [make_signal("AAPL", 0, at=now - timedelta(minutes=1), source="budgeted")])
    live = LiveSources(redis_client=client, generators=specs)
    rows = {
        r["generator"]: r for r in dashboard_data(sqlite_db, config, live=live)["health"]["rows"]
    }
    assert rows[name]["state_text"] == "insufficient data: have 12, need 205 bars"
    assert rows[name]["schedule"] == f"every {specs[name].interval_seconds} s"
    assert rows[name]["last_run"] == (now - timedelta(seconds=5)).isoformat()
    assert rows["budgeted"]["state"] == "not_configured"
    # A configured generator whose budget is spent shows it, whatever its last run said.
    live = LiveSources(redis_client=client, generators={**specs, "budgeted": specs[name]})
    rows = {
        r["generator"]: r for r in dashboard_data(sqlite_db, config, live=live)["health"]["rows"]
    }
    assert rows["budgeted"]["state_text"] == "budget: hour spent (2 of 2 calls)"
    assert rows["budgeted"]["signals"] == 1


def test_a_run_reports_the_bars_it_had_against_the_bars_it_needs(sqlite_db: Database) -> None:
    from generators.base import Tick
    from generators.golden_cross import GoldenCrossConfig, GoldenCrossSignalGenerator
    from schemas.config import GeneratorEntry
    from signalgen.bus import KombuPublisher
    from signalgen.config import GeneratorSpec
    from signalgen.runtime import build_resources, run_generator
    from signalgen.settings import Settings

    store = BarStore(sqlite_db)
    start = date(2026, 2, 2)
    store.upsert_bars(
        "AAPL",
        [BarRow(start + timedelta(days=i), 10, 10, 10, 10, 1.0) for i in range(12)],
        source="test",
    )
    generator = GoldenCrossSignalGenerator(
        GoldenCrossConfig(sma_short=5, sma_long=20), source="gc", tickers=("AAPL",)
    )
    spec = GeneratorSpec(
        name="gc",
        entry=GeneratorEntry(type="golden_cross", interval_seconds=60),
        generator=generator,
    )
    resources = build_resources(
        Settings(), specs={"gc": spec}, database=sqlite_db, publisher=KombuPublisher("memory://")
    )
    result = run_generator(spec, Tick.for_slot(datetime.now(UTC), 60), resources).as_dict()
    assert (result["bars"], result["needed"]) == (12, generator.lookback())
    assert generator.lookback() > 12 and result["provider_error"] is None


# -- metrics --------------------------------------------------------------------------------


def scrape(collector: BusCollector) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def test_collector_reads_every_section_from_sql_and_redis(sqlite_db: Database) -> None:
    client = fakeredis.FakeRedis()
    collector = BusCollector(
        sqlite_db,
        redis_client=client,
        broker_url=None,
        config=OperationsConfig(cost_per_call={"finnhub": 0.25}),
        clock=lambda: datetime.now(UTC) + timedelta(minutes=10),
    )
    before = scrape(collector)
    assert before["signalgen_outbox_backlog{}"] == 0
    record(sqlite_db, [make_signal("AAPL", i) for i in range(3)])
    pipeline = add_pipeline(sqlite_db)
    add_execution(sqlite_db, pipeline, make_signal("AAPL", 0), status="succeeded")
    with sqlite_db.session() as session:
        session.execute(update(Execution).values(latency_seconds=0.2))
    dead(sqlite_db)
    record_call(sqlite_db, provider="finnhub", generator="test_gen", endpoint="quote", calls=4)
    record_call(sqlite_db, provider="finnhub", generator="test_gen", endpoint="quote", error=True)
    client.hincrby(DEFERRED_COUNTER, "alice", 2)
    after = scrape(collector)
    assert (
        after["signalgen_signals_emitted_total{generator=test_gen,signal_type=golden_cross}"] == 3
    )
    assert after["signalgen_signals_dispatch_total{outcome=pending}"] == 3
    assert after["signalgen_executions{status=succeeded}"] == 1
    assert after["signalgen_publish_to_execution_seconds_bucket{le=0.1}"] == 0
    assert after["signalgen_publish_to_execution_seconds_bucket{le=0.25}"] == 1
    assert after["signalgen_publish_to_execution_seconds_count{}"] == 1
    assert after["signalgen_outbox_backlog{}"] == 3
    assert after["signalgen_outbox_oldest_age_seconds{}"] > 0
    assert after["signalgen_dead_letters{reason=invalid signal,stage=dispatch,status=dead}"] == 1
    assert (
        after["signalgen_provider_calls_total{endpoint=quote,generator=test_gen,provider=finnhub}"]
        == 5
    )
    assert (
        after["signalgen_provider_errors_total{endpoint=quote,generator=test_gen,provider=finnhub}"]
        == 1
    )
    assert after["signalgen_provider_cost_total{generator=test_gen,provider=finnhub}"] == 1.25
    assert after["signalgen_executions_deferred_total{owner=alice}"] == 2
    assert all(v == 1 for k, v in after.items() if k.startswith("signalgen_collector_up"))


def test_a_failing_section_is_reported_not_fatal(sqlite_db: Database) -> None:
    class Down:
        def hgetall(self, _key: str) -> dict[bytes, bytes]:
            raise ConnectionError("redis down")

    samples = scrape(
        BusCollector(sqlite_db, redis_client=Down(), broker_url=None, config=OperationsConfig())
    )
    assert samples["signalgen_collector_up{section=rate_limits}"] == 0
    assert samples["signalgen_collector_up{section=signals}"] == 1
