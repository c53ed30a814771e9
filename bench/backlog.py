"""Intake batching at load: a burst of signals drained with batching on, beside the same burst
drained one by one (`INTAKE_BATCH_MAX=1`, the baseline) by the same kind of worker, in turns.

100 tickers, one `record` pipeline each, so every signal wakes one pipeline: the case where the
intake's own task is half of a signal's cost. A fresh delivery worker (`-Q
celery,signals,dispatch,pipelines`, BENCH_CONCURRENCY processes) per turn, warmed up; then
BENCH_BACKLOG_SIGNALS signals are published as fast as one producer can (faster than a
signal's two tasks run: a backlog builds), and the turn ends when every execution has
succeeded. Printed per turn: signals/s drained, worker CPU per signal (main process and pool),
PostgreSQL CPU per signal, and the exactly-once check (one succeeded row per (pipeline,
signal), none started twice). Goal: batched CPU per signal below the baseline's, with
exactly-once held. BENCH_BACKLOG_ROUNDS (2) pairs of turns. `python -m bench backlog`.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from bench._harness import register_pipelines, start_workers, stop_workers, worker_env
from bench.dispatch import (
    CONCURRENCY,
    _app,
    _cpu_seconds,
    _database,
    _publish,
    _wait_ready,
    scratch_services,
)

SIGNALS = int(os.environ.get("BENCH_BACKLOG_SIGNALS", "2000"))
ROUNDS = int(os.environ.get("BENCH_BACKLOG_ROUNDS", "2"))
TICKERS = [f"B{n:03d}" for n in range(100)]
BATCH = "16"


def _executions(db: Any, signal_ids: list[str]) -> dict[str, int]:
    from sqlalchemy import select

    from signalgen.storage.models import Execution

    ids = {uuid.UUID(signal_id) for signal_id in signal_ids}
    with db.session() as session:
        rows = session.execute(
            select(Execution.signal_id, Execution.status, Execution.attempts).where(
                Execution.signal_id.in_(list(ids))
            )
        ).all()
    return {
        "rows": len(rows),
        "distinct": len({str(s) for s, _, _ in rows}),
        "succeeded": sum(1 for _, status, _ in rows if status == "succeeded"),
        "restarted": sum(1 for *_, attempts in rows if attempts > 1),
    }


def _turn(db: Any, env: dict[str, str], redis_url: str, log: Any, most: str) -> dict[str, float]:
    from kombu import Connection

    from signalgen.bus.topology import (
        DELIVERY_WORKER_QUEUES,
        DISPATCH_INTAKE_QUEUE,
        SIGNAL_EXCHANGE,
    )

    workers = start_workers(
        dict(env, INTAKE_BATCH_MAX=most),
        log,
        count=1,
        concurrency=CONCURRENCY,
        queues=DELIVERY_WORKER_QUEUES,
    )
    roots = [worker.pid for worker in workers]
    try:
        _wait_ready(_app(redis_url), redis_url)
        time.sleep(3)  # every pool child's warm-up done
        before = _cpu_seconds(roots)
        began = time.perf_counter()
        ids: list[str] = []
        with Connection(redis_url) as connection:
            producer = connection.Producer()
            for n in range(SIGNALS):
                ids.append(
                    _publish(
                        producer, TICKERS[n % len(TICKERS)], SIGNAL_EXCHANGE, DISPATCH_INTAKE_QUEUE
                    )
                )
        published = time.perf_counter() - began
        deadline = time.monotonic() + 300
        while (counts := _executions(db, ids))["succeeded"] < SIGNALS:
            if time.monotonic() > deadline:
                raise TimeoutError(f"backlog not drained: {counts}")
            time.sleep(0.05)
        drained = time.perf_counter() - began
        after = _cpu_seconds(roots)
    finally:
        stop_workers(workers)
    time.sleep(0.5)
    counts = _executions(db, ids)
    return {
        "published_s": published,
        "rate": SIGNALS / drained,
        "worker_ms": (after["workers"] - before["workers"]) * 1000 / SIGNALS,
        "postgres_ms": (after["postgres"] - before["postgres"]) * 1000 / SIGNALS,
        "lost": SIGNALS - counts["distinct"],
        "duplicated": counts["rows"] - counts["distinct"],
        "restarted": counts["restarted"],
    }


def bench_backlog() -> dict[str, float]:
    results: dict[str, list[dict[str, float]]] = {BATCH: [], "1": []}
    with scratch_services() as (redis_url, pg_url, directory):
        db = _database(pg_url)
        register_pipelines(
            db,
            redis_url,
            [
                {"owner": f"u{n % 10}", "name": f"p{n}", "scanner": {"tickers": [ticker]}}
                for n, ticker in enumerate(TICKERS)
            ],
        )
        env = worker_env(redis_url, pg_url, directory)
        print(
            f"backlog: {SIGNALS:,} signals published at once, 1 match each (record); 1 worker x "
            f"{CONCURRENCY} processes; batching (INTAKE_BATCH_MAX={BATCH}) vs one by one (1)"
        )
        try:
            with (directory / "worker.log").open("wb") as log:
                for _ in range(ROUNDS):
                    for most in (BATCH, "1"):
                        turn = _turn(db, env, redis_url, log, most)
                        results[most].append(turn)
                        print(
                            f"  {'batched' if most != '1' else 'one by one':10s}: drained "
                            f"{turn['rate']:6,.0f} signals/s; worker CPU {turn['worker_ms']:5.2f} "
                            f"ms/signal, PostgreSQL {turn['postgres_ms']:4.2f} ms/signal; "
                            f"{turn['lost']:.0f} lost, {turn['duplicated']:.0f} duplicated, "
                            f"{turn['restarted']:.0f} restarted (published in "
                            f"{turn['published_s']:.1f} s)"
                        )
        finally:
            db.dispose()
    batched, single = results[BATCH], results["1"]
    cpu = [b["worker_ms"] / s["worker_ms"] for b, s in zip(batched, single, strict=True)]
    rate = [b["rate"] / s["rate"] for b, s in zip(batched, single, strict=True)]
    clean = all(t["lost"] == t["duplicated"] == 0 for t in batched + single)
    print(
        "  batched / one by one, per pair: worker CPU per signal "
        + " / ".join(f"{r:.2f}x" for r in cpu)
        + "; drain rate "
        + " / ".join(f"{r:.2f}x" for r in rate)
        + f"; exactly-once {'held' if clean else 'NOT HELD'} (goal: CPU below 1.00x)"
    )
    return {"cpu_ratio": min(cpu), "rate_ratio": max(rate), "clean": float(clean)}


def run() -> None:
    bench_backlog()


if __name__ == "__main__":
    run()
