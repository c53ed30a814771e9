"""Soak: 10 minutes at 100 signals/s through the whole bus; memory must stay flat.

Real services: a scratch PostgreSQL database, a locked Redis db (both as the tests get theirs),
1,000 record pipelines (each signal matches exactly one), `SOAK_WORKERS` real `celery worker`
processes and a beat. The load goes through the real publishing path (record + outbox +
publish, tests/faults/harness.LoadGenerator). Every `SOAK_SAMPLE_SECONDS` the RSS of every
process of every worker and beat (main process and pool children) is sampled from /proc.

It reports, per process: RSS after the warm-up (the first sample past `SOAK_WARMUP_SECONDS`),
at the end, and the maximum; plus signals published, executions done, backlog and the check
(lost / duplicated) at the end. Not part of `python -m bench` (it takes 10 minutes):

    python -m tests.faults.soak                   # SOAK_SECONDS=600 SOAK_RATE=100 by default
    SOAK_SECONDS=120 python -m tests.faults.soak  # a shorter run
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

#: `python -m bench` runs this only when named.
RUN_BY_DEFAULT = False

PIPELINES = 1000


def _pgid_members(pgid: int) -> dict[int, str]:
    """pid -> command (short) of every live process in process group `pgid`."""
    members: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            members[int(entry)] = stat.split("(", 1)[1].rsplit(")", 1)[0]
    return members


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run() -> None:
    import random
    import uuid

    from signalgen.storage import Database
    from tests.conftest import create_schema
    from tests.faults import harness
    from tests.support.services import postgres_database, redis_database

    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    rate = float(os.environ.get("SOAK_RATE", "100"))
    workers = int(os.environ.get("SOAK_WORKERS", "2"))
    concurrency = int(os.environ.get("SOAK_CONCURRENCY", "2"))
    sample_every = float(os.environ.get("SOAK_SAMPLE_SECONDS", "10"))
    warmup = float(os.environ.get("SOAK_WARMUP_SECONDS", "60"))
    tickers = [f"S{n:04d}" for n in range(PIPELINES)]
    specs = [
        {
            "id": str(harness.pipeline_id(n)),
            "owner": f"u{n % 50}",
            "name": f"soak-{n}",
            "trigger_mode": "signal",
            "scanner": {"tickers": [tickers[n]]},
        }
        for n in range(PIPELINES)
    ]
    by_ticker = {tickers[n]: [harness.pipeline_id(n)] for n in range(PIPELINES)}

    with (
        postgres_database() as db_url,
        redis_database() as redis_url,
        tempfile.TemporaryDirectory(prefix="soak-") as workdir,
    ):
        db = Database(db_url)
        create_schema(db)
        stack = harness.Stack(
            Path(workdir),
            db,
            redis_url,
            redis_url,
            # Production repair and lease settings, not the fault suite's.
            extra_env={
                "REPAIR_INTERVAL_SECONDS": "60",
                "REPAIR_GRACE_SECONDS": "300",
                "OUTBOX_SWEEP_AGE_SECONDS": "30",
                "EXECUTION_LEASE_SECONDS": "300",
                "CLAIMED_GRACE_SECONDS": "60",
            },
        )
        try:
            stack.load_pipelines(specs)
            stack.start_workers(workers, concurrency=concurrency)
            stack.start_beat()
            load = harness.LoadGenerator(
                db,
                redis_url,
                rate=rate,
                duration=seconds,
                run=f"soak-{uuid.uuid4().hex[:8]}",
                tickers=tickers,
                batch=10,
                seed=random.randrange(1 << 30),
            )
            print(
                f"soak: {seconds:.0f} s at {rate:g} signals/s, {PIPELINES} pipelines, "
                f"{workers} workers x {concurrency}",
                flush=True,
            )
            started = time.monotonic()
            load.start()
            first: dict[str, int] = {}
            last: dict[str, int] = {}
            peak: dict[str, int] = {}
            while load.is_alive():
                load.join(sample_every)
                elapsed = time.monotonic() - started
                sample: dict[str, int] = {}
                for name, process in [*stack.workers.items(), *stack.beats.items()]:
                    for pid, command in sorted(_pgid_members(process.proc.pid).items()):
                        rss = _rss_kib(pid)
                        if rss is None:
                            continue
                        role = "main" if pid == process.proc.pid else f"child {pid}"
                        sample[f"{name} {role} ({command})"] = rss
                for key, rss in sample.items():
                    peak[key] = max(peak.get(key, 0), rss)
                    if elapsed >= warmup and key not in first:
                        first[key] = rss
                last = sample
                done = len(load.recorded)
                print(
                    f"  t={elapsed:5.0f}s published={done} ({done / elapsed:.1f}/s) "
                    f"rss total={sum(sample.values()) / 1024:.0f} MiB",
                    flush=True,
                )
            publish_seconds = time.monotonic() - started
            recorded = dict(load.recorded)
            settled = harness.settle(
                db,
                recorded,
                timeout=300,
                expected=sum(len(by_ticker[t]) for t in recorded.values()),
            )
            result = stack.check(
                "soak", recorded, injections=0, started=started, by_ticker=by_ticker
            )
        finally:
            stack.close()
            db.dispose()
    print(
        f"published {len(recorded)} signals in {publish_seconds:.0f} s "
        f"({len(recorded) / publish_seconds:.1f}/s); settled={settled}; "
        f"executions expected {result.expected}, executed {result.executed}; "
        f"{'' if settled else 'still queued when the soak stopped (backlog, not loss): '}"
        f"signals {result.signals_lost}, executions {result.executions_lost}; "
        f"duplicated {result.duplicated}; load error: {load.error!r}"
    )
    print(f"{'process':<60} {'start MiB':>10} {'end MiB':>9} {'max MiB':>9} {'growth':>8}")
    for key in sorted(set(first) | set(last)):
        start_kib, end_kib = first.get(key), last.get(key)
        growth = (
            f"{(end_kib - start_kib) / start_kib * 100:+.1f}%" if start_kib and end_kib else "n/a"
        )
        print(
            f"{key:<60} {_mib(start_kib):>10} {_mib(end_kib):>9} {_mib(peak.get(key)):>9} "
            f"{growth:>8}"
        )


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


if __name__ == "__main__":
    run()
