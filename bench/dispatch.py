"""Trigger dispatcher benchmarks, each beside a baseline measured in the same run.

1. matching: one signal against 10,000 and 100,000 registered pipelines with exactly 10
   matches: the index (goal < 1 ms, flat as pipelines grow 10x) beside a scan of every pipeline.
2. fan-out: one signal's 10,000 `pipelines.execute` messages: the batched fan-out beside plain
   `apply_async` of the same task to the same kind of queue (goal >= 10x); and the whole
   dispatch (claims in PostgreSQL + fan-out) for one signal matching 10,000 pipelines.
3. latency: signals published at 100/s through a real worker (intake → signals.dispatch →
   pipelines.execute started), p50/p99, beside a no-op Celery task sent at the same rate through
   the same worker just before (its task-started event); goal p99 <= 3x the no-op's p99.
   Both paths are warmed up alike (20 messages each) before either is measured.

   What sets the tail on this 2-core VM: PostgreSQL's WAL fsync and the host's own noise. A
   signal's execution commits three times, two of them waiting for the disk (the claims,
   born `enqueued`; `start`) and `finish` asynchronously (dispatcher/claims.py gives the crash
   argument for each); a no-op task never commits. Results: docs/performance.md.

Needs Redis and PostgreSQL: BENCH_REDIS_URL (default: a free db 1..15 on 127.0.0.1:6379, locked
the way the tests lock theirs), BENCH_PG_ADMIN_URL (default postgres@127.0.0.1:5432/postgres;
a scratch database is created and dropped). `python -m bench dispatch` or
`python -m bench.dispatch [matching|fanout|latency]`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._harness import (
    process_tree,
    register_pipelines,
    start_workers,
    stop_workers,
    worker_env,
)
from dispatcher.matching import MatchIndex, matches_spec
from schemas.pipeline import Scanner
from schemas.signal import Bias, Signal, SignalBias, SignalType

NOW = datetime(2025, 6, 2, 15, 0, tzinfo=UTC)
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "4"))
#: Worker processes (each with its own consumer loop): the way more load is met (DESIGN.md).
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))


# -- 1. matching --------------------------------------------------------------------------------


def _scanners(count: int, rng: random.Random) -> list[tuple[int, Scanner]]:
    """`count` pipelines over 20,000 tickers; 10 match the probe, 20 more scan its ticker but
    are filtered out (type, bias, confidence)."""
    types = list(SignalType)
    out: list[tuple[int, Scanner]] = []
    for n in range(10):
        out.append((n, Scanner(tickers=("PROBE",), min_confidence=0.5 if n % 2 else 0.0)))
    for n in range(10, 30):
        out.append(
            (
                n,
                [
                    Scanner(tickers=("PROBE",), signal_types=(SignalType.NEWS,)),
                    Scanner(tickers=("PROBE",), biases=("BEARISH",)),  # type: ignore[arg-type]
                    Scanner(tickers=("PROBE",), min_confidence=0.95),
                ][n % 3],
            )
        )
    for n in range(30, count):
        tickers = tuple({f"X{rng.randrange(20_000):05d}" for _ in range(rng.randint(1, 3))})
        kinds = tuple(rng.sample(types, rng.randint(0, 2)))
        out.append(
            (
                n,
                Scanner(
                    tickers=tickers, signal_types=kinds, min_confidence=rng.choice([0.0, 0.5, 0.8])
                ),
            )
        )
    return out


def _probe() -> Signal:
    return Signal(
        signal_id=uuid.uuid4(),
        signal_type=SignalType.GOLDEN_CROSS,
        tickers=("PROBE",),
        bias={"PROBE": SignalBias(ticker="PROBE", bias=Bias.BULLISH, confidence=0.7)},
        timestamp=NOW,
        event_time=NOW,
        source="bench",
    )


def bench_matching() -> dict[str, float]:
    rng = random.Random(42)
    signal = _probe()
    results: dict[str, float] = {}
    print("matching: one signal, 10 matches")
    for count in (10_000, 100_000):
        scanners = _scanners(count, rng)
        started = time.perf_counter()
        index = MatchIndex.build(scanners)
        build_s = time.perf_counter() - started
        found = index.match(signal)
        reference = [i for i, s in scanners if matches_spec(s, signal)]
        assert set(found) == set(reference) and len(found) == 10, (len(found), reference)
        rounds = 20_000
        started = time.perf_counter()
        for _ in range(rounds):
            index.match(signal)
        index_us = (time.perf_counter() - started) / rounds * 1e6
        started = time.perf_counter()
        for _ in range(3):
            [i for i, s in scanners if matches_spec(s, signal)]
        scan_us = (time.perf_counter() - started) / 3 * 1e6
        results[f"index_us_{count}"] = index_us
        print(
            f"  {count:>7,} pipelines: index {index_us:7.2f} µs/signal "
            f"(goal < 1,000 µs) | full scan {scan_us / 1000:8.1f} ms/signal | "
            f"index {scan_us / index_us:,.0f}x faster | build {build_s:.2f} s"
        )
    flat = results["index_us_100000"] / results["index_us_10000"]
    print(f"  growth 10k → 100k pipelines: {flat:.2f}x (flat ≈ 1)")
    results["growth"] = flat
    return results


# -- services for 2 and 3 -----------------------------------------------------------------------


@contextlib.contextmanager
def scratch_redis() -> Iterator[str]:
    import redis

    url = os.environ.get("BENCH_REDIS_URL")
    if url:
        yield url
        return
    control = redis.Redis(host="127.0.0.1", port=6379, db=0)
    token = uuid.uuid4().hex
    for number in range(15, 0, -1):
        if control.set(f"sg-test-lock:{number}", token, nx=True, ex=3600):
            break
    else:
        raise RuntimeError("no free Redis db 1..15 (set BENCH_REDIS_URL)")
    client = redis.Redis(host="127.0.0.1", port=6379, db=number)
    client.flushdb()
    try:
        yield f"redis://127.0.0.1:6379/{number}"
    finally:
        client.flushdb()
        client.close()
        if control.get(f"sg-test-lock:{number}") == token.encode():
            control.delete(f"sg-test-lock:{number}")
        control.close()


@contextlib.contextmanager
def scratch_postgres() -> Iterator[str]:
    from sqlalchemy import create_engine, text

    admin_url = os.environ.get(
        "BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    name = f"sg_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@contextlib.contextmanager
def scratch_services() -> Iterator[tuple[str, str, Path]]:
    """(Redis URL, PostgreSQL URL, a temporary directory) for one bench run, all removed after."""
    with (
        scratch_redis() as redis_url,
        scratch_postgres() as pg_url,
        tempfile.TemporaryDirectory() as scratch,
    ):
        yield redis_url, pg_url, Path(scratch)


def _database(url: str) -> Any:
    import signalgen.storage.models  # noqa: F401
    from signalgen.storage import Database
    from signalgen.storage.base import Base

    database = Database(url)
    Base.metadata.create_all(database.engine)
    return database


def _app(broker_url: str) -> Any:
    """The project's Celery app, pointed at the bench broker."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tasks import app

        app.conf.broker_url = broker_url
        app.conf.broker_write_url = broker_url
        import tasks.pipelines  # noqa: F401  (registers pipelines.execute)
    return app


# -- 2. fan-out ---------------------------------------------------------------------------------


def bench_fanout(count: int = 10_000) -> dict[str, float]:
    from kombu import Connection

    from dispatcher import service
    from dispatcher.fanout import enqueue_many
    from dispatcher.intake import envelope_for_payload
    from dispatcher.store import import_specs, load_signal_scanners
    from schemas.pipeline import PipelineSpec

    results: dict[str, float] = {}
    with scratch_redis() as redis_url, scratch_postgres() as pg_url:
        app = _app(redis_url)
        task = app.tasks["pipelines.execute"]
        print(f"fan-out: {count:,} pipelines.execute messages for one signal ({redis_url})")

        def drop(queue: str) -> None:
            with Connection(redis_url) as connection:
                connection.default_channel.queue_delete(queue)

        baseline_n = 2_000  # apply_async is slow; its rate is flat in n
        queue = f"bench-apply-{uuid.uuid4().hex[:6]}"
        with app.producer_or_acquire():
            pass
        task.apply_async((0,), {"published_at": None}, queue=queue)  # warm up: connect, declare
        started = time.perf_counter()
        for n in range(baseline_n):
            task.apply_async((n,), {"published_at": None}, queue=queue)
        apply_rate = baseline_n / (time.perf_counter() - started)
        drop(queue)

        queue = f"bench-fanout-{uuid.uuid4().hex[:6]}"
        enqueue_many(app, "pipelines.execute", [((0,), {"published_at": None})], queue=queue)
        calls = [((n,), {"published_at": None}) for n in range(count)]
        started = time.perf_counter()
        ids = enqueue_many(app, "pipelines.execute", calls, queue=queue)
        fan_rate = count / (time.perf_counter() - started)
        with Connection(redis_url) as connection:
            depth = connection.default_channel.client.llen(queue)
        assert len(ids) == count and depth == count + 1, (len(ids), depth)
        drop(queue)
        print(f"  apply_async loop : {apply_rate:>9,.0f} messages/s ({baseline_n:,} sent)")
        print(
            f"  batched fan-out  : {fan_rate:>9,.0f} messages/s ({count:,} sent) → "
            f"{fan_rate / apply_rate:.1f}x apply_async (goal >= 10x)"
        )
        results.update(apply_rate=apply_rate, fanout_rate=fan_rate, ratio=fan_rate / apply_rate)

        # The whole dispatch of one signal matching `count` pipelines: claims + fan-out.
        database = _database(pg_url)
        import_specs(
            database,
            [
                PipelineSpec.model_validate(
                    {
                        "owner": f"u{n % 100}",
                        "name": f"p{n}",
                        "trigger_mode": "signal",
                        "scanner": {"tickers": ["PROBE"]},
                    }
                )
                for n in range(count)
            ],
            redis_url=redis_url,
        )
        index = MatchIndex.build(load_signal_scanners(database))
        signal = _probe()
        queue = f"bench-dispatch-{uuid.uuid4().hex[:6]}"
        enqueued = 0

        def enqueue(items: Any) -> None:
            nonlocal enqueued
            enqueue_many(
                app,
                "pipelines.execute",
                [((i,), {"published_at": p}) for i, p in items],
                queue=queue,
            )
            enqueued += len(items)

        started = time.perf_counter()
        result = service.dispatch(
            envelope_for_payload(signal.to_json()), db=database, index=index, enqueue=enqueue
        )
        dispatch_s = time.perf_counter() - started
        assert result.claimed == count and enqueued == count, result
        drop(queue)
        database.dispose()
        print(
            f"  full dispatch    : {count / dispatch_s:>9,.0f} executions/s "
            f"(match + claim {count:,} rows in PostgreSQL + fan-out + mark enqueued: "
            f"{dispatch_s * 1000:.0f} ms) → {count / dispatch_s / apply_rate:.1f}x apply_async"
        )
        results["dispatch_rate"] = count / dispatch_s
    return results


# -- 3. latency ---------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_latency(rate: float | None = None, seconds: float = 10.0) -> dict[str, float]:
    rate = rate or float(os.environ.get("BENCH_SIGNAL_RATE", "100"))
    from kombu import Connection
    from sqlalchemy import select

    from signalgen.bus.topology import DISPATCH_INTAKE_QUEUE, SIGNAL_EXCHANGE
    from signalgen.storage.models import Execution

    results: dict[str, float] = {}
    with scratch_services() as (redis_url, pg_url, directory):
        database = _database(pg_url)
        tickers = [f"L{n:04d}" for n in range(1000)]
        register_pipelines(
            database,
            redis_url,
            [
                {"owner": f"u{n}", "name": f"p{n}", "scanner": {"tickers": [ticker]}}
                for n, ticker in enumerate(tickers)
            ],
        )
        log = (directory / "worker.log").open("wb")
        workers = start_workers(
            worker_env(redis_url, pg_url, directory), log, count=WORKERS, concurrency=CONCURRENCY
        )
        try:
            app = _app(redis_url)
            noop_sent: dict[str, float] = {}
            noop_started: dict[str, float] = {}
            stop = threading.Event()

            def listen() -> None:
                with Connection(redis_url) as connection:

                    def on_started(event: dict[str, Any]) -> None:
                        if event["uuid"] in noop_sent:
                            noop_started[event["uuid"]] = event["timestamp"]

                    receiver = app.events.Receiver(
                        connection, handlers={"task-started": on_started}
                    )
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError, OSError):
                            receiver.capture(limit=None, timeout=0.5, wakeup=False)

            listener = threading.Thread(target=listen, daemon=True)
            listener.start()
            _wait_ready(app, redis_url)
            publish_times: dict[str, float] = {}
            total = int(rate * seconds)
            with Connection(redis_url) as connection:
                producer = connection.Producer()
                noop = app.signature("celery.accumulate")
                # Warm up both paths alike, 20 messages each, so every pool child has run both
                # before either is measured (it was 20 no-ops and one signal: three of the four
                # children then ran their first dispatch inside the measured phase).
                for _ in range(20):
                    noop.apply_async(connection=connection, queue="pipelines")
                    _publish(producer, tickers[0], SIGNAL_EXCHANGE, DISPATCH_INTAKE_QUEUE)
                    time.sleep(0.05)
                time.sleep(3)
                with database.session() as session:
                    session.query(Execution).delete()
                rng = random.Random(1)
                # The load generator is not what is measured: no collector pause of its own
                # (65 ms seen) may delay a publish after its x-published-at, or bunch the next
                # ones. Both phases alike; collected again once they are over.
                gc.freeze()
                gc.disable()
                # Phase 1, the baseline: a no-op task at `rate`/s through the same worker.
                roots = [worker.pid for worker in workers]
                cpu_before = _cpu_seconds(roots)
                began = time.perf_counter()
                for n in range(total):
                    _pace(began, n, rate)
                    task_id = str(uuid.uuid4())
                    noop_sent[task_id] = time.time()
                    noop.apply_async(connection=connection, queue="pipelines", task_id=task_id)
                # The baseline is complete once every no-op has started; then the listener
                # stops, so decoding ~600 task events/s of phase 2 does not compete for the
                # same two cores (phase 2 is timed from the worker's own start timestamps).
                settle = time.monotonic() + 30
                while len(noop_started) < total and time.monotonic() < settle:
                    time.sleep(0.1)
                stop.set()
                listener.join(5)
                cpu_noop = _cpu_seconds(roots)
                time.sleep(2)
                cpu_idle = _cpu_seconds(roots)
                # Phase 2: signals at `rate`/s, each waking one pipeline.
                began = time.perf_counter()
                for n in range(total):
                    _pace(began, n, rate)
                    signal_id = _publish(
                        producer, rng.choice(tickers[1:]), SIGNAL_EXCHANGE, DISPATCH_INTAKE_QUEUE
                    )
                    publish_times[signal_id] = time.time()
                gc.enable()
            deadline = time.monotonic() + 60
            latencies: list[float] = []
            while time.monotonic() < deadline:
                with database.session() as session:
                    latencies = list(
                        session.execute(
                            select(Execution.latency_seconds).where(
                                Execution.latency_seconds.is_not(None)
                            )
                        ).scalars()
                    )
                if len(latencies) >= total:
                    break
                time.sleep(0.5)
            cpu_signals = _cpu_seconds(roots)
            _print_stages(database)
            _print_tail(database)
            for label, (a, b) in (
                ("no-op tasks", (cpu_before, cpu_noop)),
                ("signals", (cpu_idle, cpu_signals)),
            ):
                spent = {k: (b[k] - a[k]) * 1000 / total for k in a}
                print(
                    f"  CPU per {label[:-1]}: workers {spent['workers']:.2f} ms, PostgreSQL "
                    f"{spent['postgres']:.2f} ms, Redis {spent['redis']:.2f} ms"
                )
            noop_latencies = [noop_started[k] - noop_sent[k] for k in noop_started]
            if len(latencies) < total or len(noop_latencies) < total:
                print(
                    f"  incomplete: {len(latencies)}/{total} executions, "
                    f"{len(noop_latencies)}/{total} no-op tasks started"
                )
            p50, p99 = (_percentile(latencies, q) * 1000 for q in (0.5, 0.99))
            n50, n99 = (_percentile(noop_latencies, q) * 1000 for q in (0.5, 0.99))
            print(
                f"latency at {rate:.0f} signals/s for {seconds:.0f} s, after {rate:.0f} no-op "
                f"tasks/s for {seconds:.0f} s; {WORKERS} worker(s) x {CONCURRENCY} processes:"
            )
            print(
                f"  publish → pipelines.execute started: p50 {p50:7.1f} ms  p99 {p99:7.1f} ms"
                f"  (n={len(latencies)}, mean {statistics.mean(latencies) * 1000:.1f} ms)"
            )
            print(
                f"  no-op task sent → started         : p50 {n50:7.1f} ms  p99 {n99:7.1f} ms"
                f"  (n={len(noop_latencies)})"
            )
            print(
                f"  p99 ratio {p99 / n99:.2f}x the no-op's (goal <= 3x); p50 ratio {p50 / n50:.2f}x"
            )
            results.update(
                p50_ms=p50, p99_ms=p99, noop_p50_ms=n50, noop_p99_ms=n99, ratio=p99 / n99
            )
        finally:
            stop_workers(workers)
            log.close()
            database.dispose()
    return results


def _stage_rows(database: Any) -> list[Any]:
    """(published_at, claimed_at, enqueued_at, started_at, latency_seconds) of every execution
    that started."""
    from sqlalchemy import select

    from signalgen.storage.models import Execution, SignalRecord

    with database.session() as session:
        return list(
            session.execute(
                select(
                    SignalRecord.published_at,
                    Execution.claimed_at,
                    Execution.enqueued_at,
                    Execution.started_at,
                    Execution.latency_seconds,
                )
                .join(Execution, Execution.signal_id == SignalRecord.signal_id)
                .where(Execution.started_at.is_not(None), Execution.latency_seconds.is_not(None))
            ).all()
        )


def _print_stages(database: Any) -> None:
    """Where the time goes: publish → dispatch task claimed → execute started (medians)."""
    rows = _stage_rows(database)
    if not rows:
        return

    def median_ms(pairs: list[tuple[Any, Any]]) -> float:
        values = [(b - a).total_seconds() * 1000 for a, b in pairs if a and b]
        return statistics.median(values) if values else float("nan")

    print(
        f"  stages (median): publish → claimed {median_ms([(r[0], r[1]) for r in rows]):.1f} ms"
        f", claimed → enqueued {median_ms([(r[1], r[2]) for r in rows]):.1f} ms"
        f", enqueued → started {median_ms([(r[2], r[3]) for r in rows]):.1f} ms"
    )


def _cpu_seconds(roots: list[int]) -> dict[str, float]:
    """CPU time (user + system) so far of the worker process trees under `roots`, and of every
    PostgreSQL and Redis server process on the machine (Linux /proc; zeros elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def stat(pid: int) -> tuple[str, float]:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return "", 0.0
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        return name, (int(fields[11]) + int(fields[12])) / tick

    totals = {"workers": 0.0, "postgres": 0.0, "redis": 0.0}
    for pid in process_tree(roots):
        totals["workers"] += stat(pid)[1]
    for entry in Path("/proc").glob("[0-9]*"):
        name, seconds = stat(int(entry.name))
        if name == "postgres":
            totals["postgres"] += seconds
        elif name.startswith("redis-server"):
            totals["redis"] += seconds
    return totals


def _print_tail(database: Any, worst: int = 12) -> None:
    """The slowest executions: when in the run they started (seconds after the first start) and
    their stages, so a tail from warm-up is told apart from one spread over the run."""
    rows = _stage_rows(database)
    if not rows:
        return
    first = min(row[3] for row in rows)

    def ms(a: Any, b: Any) -> float:
        return (b - a).total_seconds() * 1000 if a and b else float("nan")

    buckets: dict[int, list[float]] = {}
    for row in rows:
        buckets.setdefault(int((row[3] - first).total_seconds() * 10), []).append(row[4] * 1000)
    print(
        "  max latency per 100 ms of the run (ms): "
        + " ".join(f"{max(buckets[b]):.0f}" for b in sorted(buckets)[:30])
    )
    print(f"  slowest {worst}: at s (latency ms = to claim + to enqueue + to start)")
    for row in sorted(rows, key=lambda r: -r[4])[:worst]:
        print(
            f"    {(row[3] - first).total_seconds():6.2f} s  {row[4] * 1000:7.1f} ="
            f" {ms(row[0], row[1]):6.1f} + {ms(row[1], row[2]):6.1f} + {ms(row[2], row[3]):6.1f}"
        )


def _pace(began: float, n: int, rate: float) -> None:
    delay = began + n / rate - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def _publish(producer: Any, ticker: str, exchange: Any, queue: Any) -> str:
    signal = Signal(
        signal_id=uuid.uuid4(),
        signal_type=SignalType.GOLDEN_CROSS,  # not mock: mock signals reach only opted-in pipelines
        tickers=(ticker,),
        bias={},
        timestamp=NOW,
        event_time=NOW,
        source="bench",
    )
    producer.publish(
        signal.to_json().encode(),
        exchange=exchange,
        routing_key=signal.routing_key,
        content_type="application/json",
        content_encoding="utf-8",
        headers={"x-published-at": time.time()},
        declare=[exchange, queue],
    )
    return str(signal.signal_id)


def _wait_ready(app: Any, broker_url: str, timeout: float = 60.0) -> None:
    from kombu import Connection

    deadline = time.monotonic() + timeout
    with Connection(broker_url) as connection:
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if len(app.control.ping(timeout=1.0, connection=connection)) >= WORKERS:
                    return
            time.sleep(0.5)
    raise TimeoutError("bench worker did not start")


def run() -> None:
    bench_matching()
    bench_fanout()
    bench_latency()


if __name__ == "__main__":
    chosen = sys.argv[1:] or ["matching", "fanout", "latency"]
    for name in chosen:
        {"matching": bench_matching, "fanout": bench_fanout, "latency": bench_latency}[name]()
