"""One signal's database path, in process: `dispatcher.service.dispatch` then `execute` for its
one match (a `record` executor), beside the same three writes sent raw through psycopg in the
same run.

What it isolates: the cost our code adds around the SQL that exactly-once needs, without
Celery, the broker or other processes (the bus benches, `bench.dispatch latency` and `bench
ceiling`, measure those and move with the host by more than this path's whole cost). Both
loops run on one PostgreSQL database (a scratch one, dropped after), in blocks of
`BLOCK` signals taken in turn, so both see the same load.

- ours: `service.dispatch` (decode, match, record the signal and claim in one statement, the
  fan-out being a list append here) and `service.execute` (`start` with the pipeline and the
  payload, the executor, `finish`), per signal.
- raw: the same three writes as plain SQL through one psycopg connection in autocommit: insert
  the claim, take it (`running`), finish it (its commit asynchronous, as ours); no signal row, no
  JSON, no logging, no model.

Prints per signal: this process's CPU and the wall time, ours and raw, and the ratio. Goal (this
bench's own, to hold the gain): ours within 3x of raw in CPU. Environment: BENCH_PG_ADMIN_URL,
BENCH_HOT_PATH_SIGNALS (2,000 per side).
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

SIGNALS = int(os.environ.get("BENCH_HOT_PATH_SIGNALS", "2000"))
BLOCK = 200
GOAL_CPU_RATIO = 3.0

RAW_CLAIM = """
INSERT INTO executions (pipeline_id, idempotency_key, signal_id, generation, status, attempts,
                        claimed_at, enqueued_at)
VALUES (%s, %s, %s, 0, 'enqueued', 0, now(), now())
ON CONFLICT (pipeline_id, idempotency_key) DO NOTHING
RETURNING id
"""
RAW_START = """
UPDATE executions SET status = 'running', started_at = now(), attempts = attempts + 1
WHERE id = %s AND status IN ('claimed', 'enqueued')
RETURNING id, pipeline_id, idempotency_key, attempts
"""
RAW_FINISH = """
UPDATE executions SET status = 'succeeded', finished_at = now()
WHERE id = %s AND status = 'running' AND attempts = %s
  AND set_config('synchronous_commit', 'off', true) IS NOT NULL
"""


def _ours(db: Any, index: Any) -> Callable[[], None]:
    from bench.dispatch import _probe
    from dispatcher import service
    from dispatcher.intake import envelope_for_payload

    lease = timedelta(seconds=30)

    def one() -> None:
        sent: list[tuple[int, float | None]] = []
        envelope = envelope_for_payload(_probe().to_json())  # a new signal each call
        service.dispatch(envelope, db=db, index=index, enqueue=sent.extend)
        for execution_id, published in sent:
            assert service.execute(execution_id, published, db=db, lease=lease) == "succeeded"

    return one


def _raw(url: str, pipeline_id: uuid.UUID) -> tuple[Callable[[], None], Any]:
    import psycopg

    connection = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
    connection.autocommit = True

    def one() -> None:
        signal_id = uuid.uuid4()
        key = f"signal:{signal_id}:g0"
        with connection.cursor() as cursor:
            (execution_id,) = cursor.execute(RAW_CLAIM, (pipeline_id, key, signal_id)).fetchone()
            row = cursor.execute(RAW_START, (execution_id,)).fetchone()
            cursor.execute(RAW_FINISH, (execution_id, row[3]))
            assert cursor.rowcount == 1

    return one, connection


def _timed(one: Callable[[], None], count: int) -> tuple[float, float]:
    """(CPU, wall) seconds for `count` calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        one()
    return time.process_time() - cpu, time.perf_counter() - wall


def bench_hot_path(signals: int = SIGNALS) -> dict[str, float]:
    from bench._harness import register_pipelines
    from bench.dispatch import _database, scratch_postgres, scratch_redis
    from dispatcher.matching import MatchIndex
    from dispatcher.store import load_signal_scanners

    pipeline_id = uuid.uuid4()
    spec = {
        "id": str(pipeline_id),
        "owner": "bench",
        "name": "hot-path",
        "scanner": {"tickers": ["PROBE"]},
        "executor": {"kind": "record"},
    }
    with scratch_redis() as redis_url, scratch_postgres() as url:
        db = _database(url)
        try:
            register_pipelines(db, redis_url, [spec])
            index = MatchIndex.build(load_signal_scanners(db))
            ours = _ours(db, index)
            raw, connection = _raw(url, pipeline_id)
            try:
                for one in (ours, raw):  # warm both: compiled statements, prepared plans
                    _timed(one, BLOCK)
                totals = {"ours": [0.0, 0.0], "raw": [0.0, 0.0]}
                blocks: dict[str, list[float]] = {"ours": [], "raw": []}
                for _ in range(max(1, signals // BLOCK)):
                    for name, one in (("ours", ours), ("raw", raw)):
                        cpu, wall = _timed(one, BLOCK)
                        totals[name][0] += cpu
                        totals[name][1] += wall
                        blocks[name].append(cpu / BLOCK * 1000)
            finally:
                connection.close()
        finally:
            db.dispose()
    count = max(1, signals // BLOCK) * BLOCK
    result = {
        f"{name}_{what}_ms": totals[name][i] / count * 1000
        for name in totals
        for i, what in enumerate(("cpu", "wall"))
    }
    result["cpu_ratio"] = result["ours_cpu_ms"] / result["raw_cpu_ms"]
    result["wall_ratio"] = result["ours_wall_ms"] / result["raw_wall_ms"]
    print(f"  {count:,} signals each, in blocks of {BLOCK} taken in turn, one PostgreSQL database")
    for name, label in (("ours", "dispatch + execute"), ("raw", "raw psycopg, 3 writes")):
        spread = ""
        if len(blocks[name]) > 1:
            deciles = statistics.quantiles(blocks[name], n=10)
            spread = f" (blocks p10-p90 {deciles[0]:.3f}-{deciles[-1]:.3f})"
        print(
            f"  {label:22s}: CPU {result[f'{name}_cpu_ms']:.3f} ms{spread}, "
            f"wall {result[f'{name}_wall_ms']:.3f} ms per signal"
        )
    verdict = "met" if result["cpu_ratio"] <= GOAL_CPU_RATIO else "MISSED"
    print(
        f"  ours / raw: CPU {result['cpu_ratio']:.2f}x (goal <= {GOAL_CPU_RATIO:.0f}x: {verdict}), "
        f"wall {result['wall_ratio']:.2f}x"
    )
    return result


def run() -> None:
    bench_hot_path()


if __name__ == "__main__":
    run()
