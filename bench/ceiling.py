"""The bus's ceiling: sustained executions/s with exactly-once, beside Celery's no-op drain rate.

1,000 signal pipelines (100 tickers, 10 pipelines each) so every signal wakes 10 of them. The
same delivery workers (`celery -A tasks worker -Q celery,signals,dispatch,pipelines`):

1. baseline: they stop consuming `pipelines`, N no-op tasks (`celery.accumulate`) are queued
   there, they consume it again, and the queue's drain is timed (no-op tasks/s);
2. ceiling: signals are published at stepped rates (BENCH_CEILING_RATES signals/s, each for
   BENCH_CEILING_STEP_SECONDS) until the backlog grows (more than one second of executions
   outstanding at a step's end, and more than at its middle). Sustained executions/s is the
   highest measured rate of a step that kept up; the first step that did not shows the bus's
   throughput under overload;
3. exactly-once, after everything drained: each execution's pipeline sends one Celery message
   (a `celery` executor to a queue nobody consumes, its task id stable per execution), so what
   actually ran is counted twice over: rows of PostgreSQL's `executions` (one per pipeline and
   signal, succeeded) and messages in that queue (total and distinct task ids). Lost =
   expected - distinct ran; duplicated = messages - distinct.

Goal: sustained executions/s >= 50 % of the no-op drain rate. Worker RSS (and PSS) is printed
after start-up and after the run. Environment: BENCH_CEILING_RATES (default
`5,10,15,20,25,30,35,40,50,60,80,100`), BENCH_CEILING_STEP_SECONDS (5), BENCH_CEILING_NOOPS (5000),
BENCH_CONCURRENCY, BENCH_WORKERS and the scratch services as `bench.dispatch`.
`python -m bench ceiling` or `python -m bench.ceiling`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._harness import (
    PROJECT_ROOT,
    print_memory,
    register_pipelines,
    start_workers,
    stop_workers,
    worker_env,
)
from bench.dispatch import (
    CONCURRENCY,
    WORKERS,
    _app,
    _cpu_seconds,
    _database,
    _pace,
    _publish,
    _wait_ready,
    scratch_services,
)

RATES = tuple(
    float(r)
    for r in os.environ.get("BENCH_CEILING_RATES", "5,10,15,20,25,30,35,40,50,60,80,100").split(",")
)
STEP_SECONDS = float(os.environ.get("BENCH_CEILING_STEP_SECONDS", "5"))
NOOPS = int(os.environ.get("BENCH_CEILING_NOOPS", "5000"))
TICKERS = tuple(f"C{n:03d}" for n in range(100))
MATCHES = 10  # pipelines per ticker: 100 x 10 = 1,000 pipelines
SINK_TASK = "bench.sink"
SINK_QUEUE = "bench.sink"
#: A step kept up unless more than this many seconds of its executions are outstanding at its end.
BACKLOG_SECONDS = 1.0


@dataclass
class Step:
    rate: float  # signals/s asked for
    began: float  # wall clock (time.time), first publish
    ended: float  # wall clock, last publish
    published_before: int  # signals published before this step
    published: int  # signals published in this step
    backlog_mid: int  # executions outstanding half-way
    backlog_end: int  # executions outstanding at the end

    @property
    def kept_up(self) -> bool:
        allowed = self.rate * MATCHES * BACKLOG_SECONDS
        return not (self.backlog_end > allowed and self.backlog_end > self.backlog_mid)


def _finished(db: Any) -> int:
    from sqlalchemy import func, select

    from signalgen.storage.models import Execution

    with db.session() as session:
        return int(
            session.execute(
                select(func.count()).where(Execution.finished_at.is_not(None))
            ).scalar_one()
        )


def _operations_config(directory: Path) -> Path:
    """config/operations.json with the sink task allowed for `celery` executors."""
    config = json.loads((PROJECT_ROOT / "config" / "operations.json").read_text())
    config.setdefault("executors", {})["celery_tasks"] = [
        {"task": SINK_TASK, "queues": [SINK_QUEUE]}
    ]
    path = directory / "operations.json"
    path.write_text(json.dumps(config))
    return path


@contextlib.contextmanager
def _operations(path: str) -> Iterator[None]:
    """This process reads its operations config from `path` meanwhile."""
    from signalgen.config.operations import get_operations_config

    before = os.environ.get("OPERATIONS_CONFIG_PATH")
    os.environ["OPERATIONS_CONFIG_PATH"] = path
    get_operations_config.cache_clear()
    try:
        yield
    finally:
        if before is None:
            del os.environ["OPERATIONS_CONFIG_PATH"]
        else:
            os.environ["OPERATIONS_CONFIG_PATH"] = before
        get_operations_config.cache_clear()


def drain_noops(app: Any, redis_url: str, count: int) -> float:
    """No-op tasks/s: the workers stop consuming `pipelines`, `count` no-ops are queued there,
    the workers consume it again; timed from the first taken to the queue empty."""
    import redis

    from dispatcher.fanout import enqueue_many
    from signalgen.bus.topology import PIPELINES_QUEUE

    client = redis.Redis.from_url(redis_url)
    app.control.cancel_consumer(PIPELINES_QUEUE, reply=True, timeout=5)
    enqueue_many(app, "celery.accumulate", [((), {}) for _ in range(count)], queue=PIPELINES_QUEUE)
    queued = int(client.llen(PIPELINES_QUEUE))
    app.control.add_consumer(PIPELINES_QUEUE, reply=True, timeout=5)
    first = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        depth = int(client.llen(PIPELINES_QUEUE))
        now = time.perf_counter()
        if first is None and depth < queued:
            first, taken = now, queued - depth
        if depth == 0:
            break
        time.sleep(0.005)
    else:
        raise TimeoutError(f"no-op tasks not drained: {client.llen(PIPELINES_QUEUE)} left")
    client.close()
    assert first is not None
    # The interval is timed from the first poll that saw the queue shorter: what was taken
    # before that poll is not counted.
    return (queued - taken) / max(now - first, 1e-6)


def run_steps(db: Any, redis_url: str) -> list[Step]:
    """Publish signals at each rate of RATES for STEP_SECONDS until a step does not keep up."""
    from kombu import Connection

    from signalgen.bus.topology import DISPATCH_INTAKE_QUEUE, SIGNAL_EXCHANGE

    rng = random.Random(14)
    steps: list[Step] = []
    published = 0
    with Connection(redis_url) as connection:
        producer = connection.Producer()
        for rate in RATES:
            total = max(1, int(rate * STEP_SECONDS))
            began_wall, began = time.time(), time.perf_counter()
            backlog_mid = 0
            for n in range(total):
                _pace(began, n, rate)
                _publish(producer, rng.choice(TICKERS), SIGNAL_EXCHANGE, DISPATCH_INTAKE_QUEUE)
                if n == total // 2:
                    backlog_mid = (published + n + 1) * MATCHES - _finished(db)
            step = Step(
                rate=rate,
                began=began_wall,
                ended=time.time(),
                published_before=published,
                published=total,
                backlog_mid=backlog_mid,
                backlog_end=(published + total) * MATCHES - _finished(db),
            )
            published += total
            steps.append(step)
            print(
                f"  {rate:6.0f} signals/s ({rate * MATCHES:6.0f} executions/s asked): backlog "
                f"{step.backlog_mid:6,} half-way, {step.backlog_end:6,} at the end"
                + ("" if step.kept_up else "  <- growing: ceiling passed"),
                flush=True,
            )
            if not step.kept_up:
                break
    return steps


def measured_rates(db: Any, steps: list[Step]) -> list[float]:
    """Executions finished per second during each step (wall clock of the workers' rows)."""
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from signalgen.storage.models import Execution

    rates: list[float] = []
    with db.session() as session:
        for step in steps:
            window = (
                datetime.fromtimestamp(step.began, UTC),
                datetime.fromtimestamp(step.ended, UTC),
            )
            done = session.execute(
                select(func.count()).where(Execution.finished_at.between(*window))
            ).scalar_one()
            rates.append(int(done) / max(step.ended - step.began, 1e-6))
    return rates


def exactly_once(db: Any, redis_url: str, expected: int, timeout: float = 90.0) -> dict[str, int]:
    """Wait until `expected` executions finished (or `timeout`), then count what ran."""
    import redis
    from sqlalchemy import distinct, func, select, tuple_

    from signalgen.storage.models import Execution

    deadline = time.monotonic() + timeout
    while _finished(db) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1.0)  # a duplicate would arrive after the last first run
    with db.session() as session:
        rows = session.execute(select(func.count()).select_from(Execution)).scalar_one()
        pairs = session.execute(
            select(func.count(distinct(tuple_(Execution.pipeline_id, Execution.signal_id))))
        ).scalar_one()
        by_status = dict(
            session.execute(select(Execution.status, func.count()).group_by(Execution.status)).all()
        )
    client = redis.Redis.from_url(redis_url)
    messages = [json.loads(raw)["headers"]["id"] for raw in client.lrange(SINK_QUEUE, 0, -1)]
    client.close()
    ran = len(set(messages))
    return {
        "expected": expected,
        "rows": int(rows),
        "distinct_rows": int(pairs),
        "succeeded": int(by_status.get("succeeded", 0)),
        "ran": ran,
        "messages": len(messages),
        "lost": expected - ran,
        "duplicated": len(messages) - ran,
        **{f"status_{k}": int(v) for k, v in by_status.items() if k != "succeeded"},
    }


def bench_ceiling() -> dict[str, float]:
    from signalgen.bus.topology import DELIVERY_WORKER_QUEUES

    results: dict[str, float] = {}
    with scratch_services() as (redis_url, pg_url, directory):
        operations = str(_operations_config(directory))
        db = _database(pg_url)
        with _operations(operations):  # registering checks the executor against it too
            register_pipelines(
                db,
                redis_url,
                [
                    {
                        "owner": f"u{n % 50}",
                        "name": f"p{n}",
                        "scanner": {"tickers": [TICKERS[n % len(TICKERS)]]},
                        "executor": {"kind": "celery", "task": SINK_TASK, "queue": SINK_QUEUE},
                    }
                    for n in range(len(TICKERS) * MATCHES)
                ],
            )
        env = worker_env(redis_url, pg_url, directory, OPERATIONS_CONFIG_PATH=operations)
        log = (directory / "worker.log").open("wb")
        workers = start_workers(
            env, log, count=WORKERS, concurrency=CONCURRENCY, queues=DELIVERY_WORKER_QUEUES
        )
        roots = [worker.pid for worker in workers]
        try:
            app = _app(redis_url)
            _wait_ready(app, redis_url)
            time.sleep(3)  # every pool child's warm-up (index, connections) done
            print(
                f"ceiling: {len(TICKERS) * MATCHES:,} pipelines, {MATCHES} matches per signal; "
                f"{WORKERS} worker(s) x {CONCURRENCY} processes, queues "
                f"{','.join(DELIVERY_WORKER_QUEUES)}"
            )
            print_memory("after start", roots)
            cpu_before = _cpu_seconds(roots)
            noop_rate = drain_noops(app, redis_url, NOOPS)
            cpu_noop = _cpu_seconds(roots)
            print(f"  no-op drain: {noop_rate:,.0f} tasks/s ({NOOPS:,} celery.accumulate)")
            steps = run_steps(db, redis_url)
            expected = sum(step.published for step in steps) * MATCHES
            counts = exactly_once(db, redis_url, expected)
            cpu_after = _cpu_seconds(roots)
            rates = measured_rates(db, steps)
            print_memory("after the run", roots)
        finally:
            stop_workers(workers)
            log.close()
            db.dispose()
    for step, rate in zip(steps, rates, strict=True):
        print(
            f"  step {step.rate:4.0f} signals/s: {rate:7,.0f} executions/s finished"
            f" ({'kept up' if step.kept_up else 'backlog grew'})"
        )
    kept = [rate for step, rate in zip(steps, rates, strict=True) if step.kept_up]
    sustained = max(kept, default=0.0)
    print(
        f"  exactly-once over {counts['expected']:,} executions: {counts['lost']} lost, "
        f"{counts['duplicated']} duplicated (ran: {counts['ran']:,} distinct of "
        f"{counts['messages']:,} messages; executions table: {counts['rows']:,} rows, "
        f"{counts['distinct_rows']:,} distinct, {counts['succeeded']:,} succeeded)"
    )
    others = {k: v for k, v in counts.items() if k.startswith("status_")}
    if others:
        print(f"  other statuses: {others}")
    per_noop = (cpu_noop["workers"] - cpu_before["workers"]) * 1000 / NOOPS
    per_execution = (cpu_after["workers"] - cpu_noop["workers"]) * 1000 / max(expected, 1)
    print(
        f"  worker CPU: {per_noop:.2f} ms per no-op task, {per_execution:.2f} ms per execution "
        f"(its share of dispatch included) → {per_execution / per_noop:.1f}x"
    )
    clean = counts["lost"] == counts["duplicated"] == 0 and counts["succeeded"] == expected
    ceiling_note = ""
    if not kept:
        ceiling_note = " (the first step saturated already: lower BENCH_CEILING_RATES)"
    elif steps[-1].kept_up:
        ceiling_note = " (never saturated: raise BENCH_CEILING_RATES)"
    print(
        f"  sustained {sustained:,.0f} executions/s with exactly-once"
        f"{'' if clean else ' NOT HELD'}{ceiling_note} vs no-op drain {noop_rate:,.0f} tasks/s"
        f" → {sustained / noop_rate:.0%} (goal >= 50 %)"
    )
    results.update(
        sustained=sustained,
        noop_rate=noop_rate,
        ratio=sustained / noop_rate,
        lost=counts["lost"],
        duplicated=counts["duplicated"],
    )
    return results


def run() -> None:
    bench_ceiling()


if __name__ == "__main__":
    run()
