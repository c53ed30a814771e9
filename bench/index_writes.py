"""Dispatch latency while pipelines are being written: the incremental index (issue 10).

100,000 `signal` pipelines in PostgreSQL (tickers drawn, skewed, from 3,000 symbols, 1-8
each; 5% watchlist scanners, 30% with a bias filter, 40% with signal types, thresholds 0 / 0.5
/ 0.7). One worker-side `IndexCache`, wired exactly as `dispatcher.runtime` wires a worker's,
serves a stream of signals at BENCH_SIGNAL_RATE (default 200/s). Measured per signal, the same
in both runs: decode the envelope, `IndexCache.current()`, `.match(signal)` (what
`dispatcher.service.dispatch` does in-process before its claims statement).

- baseline: BENCH_PHASE_SECONDS (default 30) of signals, no writes;
- with writes: the same, while another process (as the API would) makes 10 pipeline writes/s
  through `dispatcher.store` (scanner updates, disable/enable, adds, deletes: admission,
  commit, version bump and change log included).

Goal: p99 with writes <= 1.5x the baseline's. Both phases verify the index against the
database every BENCH_MAX_AGE_SECONDS (default 10, six times as often as the default 60 s), so
the verification query is inside both measurements. Printed beside them: the cost of one full
rebuild (load + build), which is what every write cost the next dispatch before (3.6-5.5 s in
the issue's report, with 400,000 scanner entries).

Needs Redis and PostgreSQL (see bench/dispatch.py: BENCH_REDIS_URL, BENCH_PG_ADMIN_URL).
`python -m bench index_writes`.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from bench.dispatch import _database, _pace, _percentile, scratch_postgres, scratch_redis
from schemas.pipeline import Scanner
from schemas.signal import Bias, Signal, SignalType

PIPELINES = int(os.environ.get("BENCH_PIPELINES", "100000"))
SYMBOLS = 3000
OWNERS = 2000  # 50 pipelines each: within the default quotas
WRITES_PER_SECOND = float(os.environ.get("BENCH_WRITES_PER_SECOND", "10"))
SIGNAL_RATE = float(os.environ.get("BENCH_SIGNAL_RATE", "200"))
PHASE_SECONDS = float(os.environ.get("BENCH_PHASE_SECONDS", "30"))
MAX_AGE_SECONDS = float(os.environ.get("BENCH_MAX_AGE_SECONDS", "10"))
NAMESPACE = uuid.UUID("0f6c2a52-5d0e-4c55-9a59-3d8e1c1b2a10")
NOW = datetime(2025, 6, 2, 15, 0, tzinfo=UTC)
TYPES = [SignalType.GOLDEN_CROSS, SignalType.DEATH_CROSS, SignalType.NEWS, SignalType.MOCK]


def pipeline_id(number: int) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"p{number}")


def symbol(rng: random.Random) -> str:
    # Skewed: the most popular symbols are scanned by thousands of pipelines, most by dozens.
    return f"S{int(SYMBOLS * rng.random() ** 2):04d}"


#: The operator's watchlist (what `"watchlist": true` scanners follow): the 50 most scanned.
WATCHLIST = tuple(f"S{n:04d}" for n in range(50))


def random_scanner(rng: random.Random) -> Scanner:
    if rng.random() < 0.05:
        tickers: tuple[str, ...] = ()
    else:
        tickers = tuple({symbol(rng) for _ in range(rng.randint(1, 8))})
    return Scanner(
        tickers=tickers,
        watchlist=not tickers,
        signal_types=tuple(rng.sample(TYPES, rng.randint(1, 2))) if rng.random() < 0.4 else (),
        biases=(rng.choice([Bias.BULLISH, Bias.BEARISH]),) if rng.random() < 0.3 else (),
        min_confidence=rng.choice([0.0, 0.5, 0.7]),
    )


def pipeline_row(number: int, scanner: Scanner) -> dict[str, Any]:
    return {
        "id": pipeline_id(number),
        "owner": f"u{number % OWNERS}",
        "name": f"p{number}",
        "enabled": True,
        "trigger_mode": "signal",
        "scanner": scanner.model_dump(mode="json"),
        "schedule": None,
        "executor": "record",
        "executor_config": {},
    }


def load_pipelines(database: Any, count: int) -> None:
    """Bulk insert (setup only: the writes under test go through dispatcher.store)."""
    from sqlalchemy import insert

    from signalgen.storage.models import Pipeline

    rng = random.Random(10)
    batch: list[dict[str, Any]] = []
    with database.session() as session:
        for number in range(count):
            batch.append(pipeline_row(number, random_scanner(rng)))
            if len(batch) == 5000:
                session.execute(insert(Pipeline), batch)
                batch = []
        if batch:
            session.execute(insert(Pipeline), batch)


def write_loop(pg_url: str, redis_url: str, rate: float, stop: Any, results: Any) -> None:
    """Another process (the API's role): `rate` pipeline writes/s until `stop` is set."""
    from dispatcher import store
    from schemas.pipeline import PipelineSpec
    from signalgen.storage import Database

    database = Database(pg_url)
    rng = random.Random(99)
    added: list[int] = []
    disabled: set[int] = set()
    next_number = PIPELINES
    durations: list[float] = []
    began = time.perf_counter()
    n = 0
    while not stop.is_set():
        _pace(began, n, rate)
        n += 1
        roll = rng.random()
        started = time.perf_counter()
        if roll < 0.5:
            number = rng.randrange(PIPELINES)
            spec = PipelineSpec.model_validate(
                {
                    "owner": f"u{number % OWNERS}",
                    "name": f"p{number}",
                    "trigger_mode": "signal",
                    "scanner": random_scanner(rng).model_dump(mode="json"),
                    "enabled": number not in disabled,
                }
            )
            store.update_pipeline(database, pipeline_id(number), spec, redis_url=redis_url)
        elif roll < 0.7:
            number = rng.randrange(PIPELINES)
            enable = number in disabled
            store.set_enabled(database, pipeline_id(number), enable, redis_url=redis_url)
            (disabled.discard if enable else disabled.add)(number)
        elif roll < 0.85 or not added:
            number = next_number
            next_number += 1
            spec = PipelineSpec.model_validate(
                {
                    "id": str(pipeline_id(number)),
                    "owner": f"u{number % OWNERS}",
                    "name": f"p{number}",
                    "trigger_mode": "signal",
                    "scanner": random_scanner(rng).model_dump(mode="json"),
                }
            )
            store.add_pipeline(database, spec, redis_url=redis_url)
            added.append(number)
        else:
            number = added.pop(rng.randrange(len(added)))
            store.remove_pipeline(database, pipeline_id(number), redis_url=redis_url)
        durations.append(time.perf_counter() - started)
    database.dispose()
    results.put((n, statistics.median(durations) if durations else 0.0))


def signal_payloads(count: int, rng: random.Random) -> list[str]:
    out = []
    for _ in range(count):
        ticker = symbol(rng)
        bias = (
            {ticker: {"ticker": ticker, "bias": rng.choice(list(Bias)).value, "confidence": 0.6}}
            if rng.random() < 0.7
            else {}
        )
        signal = Signal(
            signal_id=uuid.uuid4(),
            signal_type=rng.choice(TYPES),
            tickers=(ticker,),
            bias=bias,
            timestamp=NOW,
            event_time=NOW,
            source="bench",
        )
        out.append(signal.to_json())
    return out


def measure(cache: Any, payloads: list[str], rate: float) -> dict[str, Any]:
    """Latency of decode + current() + match per signal, paced at `rate`; and which samples
    carried a patch, a rebuild or a verification."""
    from dispatcher.intake import decode_envelope, envelope_for_payload

    latencies: list[float] = []
    matched = 0
    patches, rebuilds = cache.patches, cache.rebuilds
    patch_latencies: list[float] = []
    began = time.perf_counter()
    for n, payload in enumerate(payloads):
        _pace(began, n, rate)
        envelope = envelope_for_payload(payload, published_at=time.time())
        started = time.perf_counter()
        delivery = decode_envelope(envelope)
        found = cache.current().match(delivery.signal)
        elapsed = time.perf_counter() - started
        latencies.append(elapsed)
        matched += len(found)
        if cache.patches != patches:
            patch_latencies.append(elapsed)
            patches = cache.patches
    return {
        "latencies": latencies,
        "matched": matched,
        "patches": len(patch_latencies),
        "patch_latencies": patch_latencies,
        "rebuilds": cache.rebuilds - rebuilds,
    }


def _summary(label: str, result: dict[str, Any]) -> tuple[float, float]:
    values = result["latencies"]
    p50, p99, p999 = (_percentile(values, q) * 1000 for q in (0.5, 0.99, 0.999))
    patch = result["patch_latencies"]
    patch_text = (
        f"; {result['patches']} checks patched (median {statistics.median(patch) * 1000:.2f} ms,"
        f" max {max(patch) * 1000:.2f} ms)"
        if patch
        else ""
    )
    print(
        f"  {label:<13}: p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  p99.9 {p999:7.3f} ms  max "
        f"{max(values) * 1000:7.2f} ms  (n={len(values)}, {result['matched']:,} matches, "
        f"{result['rebuilds']} rebuilds{patch_text})"
    )
    return p50, p99


def run() -> None:
    from dispatcher.matching import MatchIndex
    from dispatcher.store import (
        IndexCache,
        load_signal_pipelines,
        redis_change_reader,
        redis_version_reader,
        signal_pipelines_fingerprint,
    )

    with scratch_redis() as redis_url, scratch_postgres() as pg_url:
        database = _database(pg_url)
        started = time.perf_counter()
        load_pipelines(database, PIPELINES)
        print(
            f"index under writes: {PIPELINES:,} signal pipelines over {SYMBOLS:,} symbols "
            f"(inserted in {time.perf_counter() - started:.1f} s)"
        )
        cache = IndexCache(
            load=lambda: load_signal_pipelines(database),
            load_some=lambda ids: load_signal_pipelines(database, ids),
            read_version=redis_version_reader(redis_url),
            read_changes=redis_change_reader(redis_url),
            fingerprint=lambda: signal_pipelines_fingerprint(database),
            watchlist=lambda: WATCHLIST,
            check_interval=1.0,
            max_age=MAX_AGE_SECONDS,
        )
        started = time.perf_counter()
        rows = load_signal_pipelines(database)
        loaded = time.perf_counter() - started
        index = MatchIndex.build(
            ((r.id, r.scanner) for r in rows if r.scanner is not None), watchlist=WATCHLIST
        )
        rebuild_s = time.perf_counter() - started
        entries = sum(len(bucket.pipelines) for bucket in index._buckets.values())
        del rows, index
        cache.prime()
        started = time.perf_counter()
        signal_pipelines_fingerprint(database)
        verify_ms = (time.perf_counter() - started) * 1000
        print(
            f"  full rebuild (the old cost of every write): {rebuild_s:.2f} s "
            f"(load {loaded:.2f} s + build {rebuild_s - loaded:.2f} s; {entries:,} bucket "
            f"entries); one verification query: {verify_ms:.1f} ms"
        )
        rng = random.Random(5)
        count = int(SIGNAL_RATE * PHASE_SECONDS)
        measure(cache, signal_payloads(200, rng), SIGNAL_RATE)  # warm up both code paths
        gc.collect()
        baseline = measure(cache, signal_payloads(count, rng), SIGNAL_RATE)

        context = multiprocessing.get_context("spawn")
        stop, results = context.Event(), context.Queue()
        writer = context.Process(
            target=write_loop, args=(pg_url, redis_url, WRITES_PER_SECOND, stop, results)
        )
        writer.start()
        time.sleep(3)  # the writer's imports and first connections, outside the measurement
        gc.collect()
        written = measure(cache, signal_payloads(count, rng), SIGNAL_RATE)
        stop.set()
        writes, write_median = results.get(timeout=60)
        writer.join(30)

        print(
            f"  {SIGNAL_RATE:.0f} signals/s for {PHASE_SECONDS:.0f} s each; index checked every "
            f"1 s, verified every {MAX_AGE_SECONDS:.0f} s; per signal: decode + current() + match"
        )
        _, base_p99 = _summary("no writes", baseline)
        _, write_p99 = _summary("10 writes/s", written)
        print(
            f"  writes made: {writes} ({writes / (PHASE_SECONDS + 3):.1f}/s, median "
            f"{write_median * 1000:.1f} ms each incl. admission and bump)"
        )
        print(
            f"  p99 ratio {write_p99 / base_p99:.2f}x the no-write run's (goal <= 1.5x); "
            f"a full rebuild is {rebuild_s * 1000 / write_p99:,.0f}x the p99 with writes"
        )
        # The patched index still equals a fresh build.
        fresh = MatchIndex.build(
            ((r.id, r.scanner) for r in load_signal_pipelines(database) if r.scanner is not None),
            watchlist=WATCHLIST,
        )
        time.sleep(1.1)
        current = cache.current()
        probe = [Signal.model_validate_json(p) for p in signal_payloads(300, rng)]
        same = all(set(current.match(s)) == set(fresh.match(s)) for s in probe)
        print(f"  patched index == fresh build on 300 signals: {same}; size {current.size:,}")
        assert same and current.size == fresh.size
        database.dispose()


if __name__ == "__main__":
    run()
