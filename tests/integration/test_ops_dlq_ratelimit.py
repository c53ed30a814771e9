"""Dead letters and per-owner execution limits on real services (Celery worker processes,
Redis, PostgreSQL). Nothing is lost: every message is dispatched or dead-lettered, every
execution is run, deferred or recorded rate_limited."""

from __future__ import annotations

import json
import pickle
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from signalgen.storage import Database
from signalgen.storage.models import DeadLetter, Execution, SignalRecord
from tests.integration.ops_support import (
    add_pipelines,
    ops_env,
    publish,
    publish_raw,
    run_cli,
    signal_json,
    statuses,
)
from tests.support.processes import CeleryProcess, start_worker
from tests.support.wait import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning"),
]


def two_workers(env: dict[str, str], tmp_path: Path) -> list[CeleryProcess]:
    workers = [
        start_worker(env, tmp_path / f"{n}.log", name=n, concurrency=2, wait=False)
        for n in ("w1", "w2")
    ]
    for worker in workers:
        worker.wait_for("ready.", timeout=60)
    return workers


def malformed(kind: int, n: int) -> tuple[bytes, str | None, str]:
    """Ten kinds of bad message; each a (body, content type, routing key)."""
    good = signal_json("AAPL", n)
    broken: dict[str, Any] = dict(good)
    if kind == 0:
        return b'{"signal_id": ', "application/json", "signal.garbage"
    if kind == 1:
        return b"", "application/json", "signal.garbage"
    if kind == 2:
        return b"[1, 2, 3]", "application/json", "signal.garbage"
    if kind == 3:
        broken.pop("signal_id")
    elif kind == 4:
        broken["tickers"] = ["aapl"]
        broken["bias"] = {}
    elif kind == 5:
        broken["signal_type"] = "moon_phase"
    elif kind == 6:
        broken["bias"] = {"AAPL": {"ticker": "AAPL", "bias": "BULLISH", "confidence": 1.5}}
    elif kind == 7:
        broken["timestamp"] = "2026-03-02T14:00:00"
    elif kind == 8:
        return (
            pickle.dumps({"signal": n}),
            "application/x-python-serialize",
            "signal.golden_cross.AAPL",
        )
    elif kind == 9:
        return b"\xff\xfe{\x00", "application/json", "signal.golden_cross.AAPL"
    return json.dumps(broken).encode(), "application/json", "signal.golden_cross.AAPL"


EXPECTED_REASONS = {
    0: "invalid signal: signal: Invalid JSON",
    1: "invalid signal: signal: Invalid JSON",
    2: "invalid signal: signal: Input should be an object",
    3: "invalid signal: signal_id: Field required",
    4: "invalid signal: tickers.0",
    5: "invalid signal: signal_type",
    6: "invalid signal: bias.AAPL.confidence",
    7: "invalid signal: timestamp",
    8: "content type 'application/x-python-serialize' refused",
    9: "body is not UTF-8 text",
}


class Hook(BaseHTTPRequestHandler):
    """A pipeline's webhook receiver: answers 500 until fixed, then 200; counts deliveries."""

    fixed = False
    delivered: list[str] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.lock:
            if Hook.fixed:
                Hook.delivered.append(json.loads(body)["signal_id"])
        self.send_response(200 if Hook.fixed else 500)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def hook_url() -> Iterator[str]:
    Hook.fixed, Hook.delivered = False, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def test_thousand_malformed_messages_are_dead_lettered_and_valid_ones_dispatched(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object, hook_url: str
) -> None:
    env = ops_env(tmp_path, pg_db, redis_url)
    (recorder,) = add_pipelines(
        pg_db, redis_url, {"owner": "alice", "scanner": {"tickers": ["AAPL"]}}
    )
    (hooked,) = add_pipelines(
        pg_db,
        redis_url,
        {
            "owner": "bob",
            "scanner": {"tickers": ["NVDA"]},
            "executor": {
                "kind": "webhook",
                "url": hook_url,
                "secret": "s" * 24,
                "timeout_seconds": 5,
                "max_attempts": 2,
                "backoff_seconds": 0.05,
            },
        },
    )
    workers = two_workers(env, tmp_path)
    try:
        valid = [signal_json("AAPL", i) for i in range(50)]
        messages: list[tuple[bytes, str | None, str]] = []
        for n in range(100):
            for kind in range(10):
                messages.append(malformed(kind, n))
            if n % 2 == 0:
                messages.append(
                    (
                        json.dumps(valid[n // 2]).encode(),
                        "application/json",
                        "signal.golden_cross.AAPL",
                    )
                )
        publish_raw(redis_url, messages)

        def count_dead() -> int:
            with pg_db.session() as session:
                return int(
                    session.execute(select(func.count()).select_from(DeadLetter)).scalar_one()
                )

        wait_until(
            lambda: count_dead() >= 1000 and statuses(pg_db, recorder).get(("succeeded", 0)) == 50,
            timeout=180,
            message="dead letters and dispatch",
            detail=lambda: (count_dead(), statuses(pg_db)),
        )
        time.sleep(1)
        with pg_db.session() as session:
            reasons = session.execute(
                select(DeadLetter.reason, DeadLetter.stage, DeadLetter.attempts, DeadLetter.body)
            ).all()
            recorded = int(
                session.execute(select(func.count()).select_from(SignalRecord)).scalar_one()
            )
        assert len(reasons) == 1000
        assert {stage for _, stage, _, _ in reasons} == {"dispatch"}
        for kind, expected in EXPECTED_REASONS.items():
            matching = [r for r in reasons if r[0].startswith(expected)]
            assert len(matching) == 100 if kind > 1 else True, (kind, expected)
        assert sum(1 for r in reasons if r[0].startswith(EXPECTED_REASONS[0])) == 200
        assert sum(1 for r in reasons if bytes(r[3]).startswith(b"\x80")) == 100  # pickles kept
        assert recorded == 50
        for worker in workers:
            assert worker.proc.poll() is None
            assert "WorkerLostError" not in worker.output()

        # An execution that fails after its retries becomes a dead letter; requeued after the
        # receiver is fixed, it runs once.
        nvda = [signal_json("NVDA", i) for i in range(3)]
        publish(redis_url, nvda)
        wait_until(
            lambda: statuses(pg_db, hooked).get(("failed", 0)) == 3,
            timeout=60,
            message="failed executions",
            detail=lambda: statuses(pg_db, hooked),
        )
        listing = run_cli(env, "dlq", "list", "--stage", "execute", "--json")
        rows = json.loads(listing.stdout)
        assert len(rows) == 3 and all(r["attempts"] == 2 for r in rows), listing.stdout
        assert all("HTTP 500" in r["reason"] or "500" in r["reason"] for r in rows)
        shown = run_cli(env, "dlq", "show", str(rows[0]["id"]))
        assert json.loads(json.loads(shown.stdout)["body"])["tickers"] == ["NVDA"]

        Hook.fixed = True
        requeued = run_cli(env, "dlq", "requeue", "--stage", "execute")
        assert "requeued 3" in requeued.stdout, requeued.stdout + requeued.stderr
        wait_until(
            lambda: statuses(pg_db, hooked).get(("succeeded", 0)) == 3,
            timeout=60,
            message="requeued executions",
            detail=lambda: statuses(pg_db, hooked),
        )
        again = run_cli(env, "dlq", "requeue", "--stage", "execute")
        assert "requeued 0" in again.stdout
        time.sleep(2)
        assert sorted(Hook.delivered) == sorted(s["signal_id"] for s in nvda)

        purged = run_cli(env, "dlq", "purge", "--reason", "UTF-8", "--yes")
        assert "purged 100" in purged.stdout, purged.stdout + purged.stderr
    finally:
        for worker in workers:
            worker.stop()


def test_owner_limit_is_exact_across_two_workers_and_replay_picks_up_the_rest(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object
) -> None:
    env = ops_env(
        tmp_path,
        pg_db,
        redis_url,
        operations={
            "rate_limits": {
                "on_limit": "record",
                "default": None,
                "owners": {
                    "alice": {"executions": 10, "window_seconds": 60},
                    "carol": {"executions": 2, "window_seconds": 2},
                },
            }
        },
    )
    alice, carol = add_pipelines(
        pg_db,
        redis_url,
        {"owner": "alice", "scanner": {"tickers": ["AAPL"]}},
        {"owner": "carol", "scanner": {"tickers": ["MSFT"]}},
    )
    workers = two_workers(env, tmp_path)
    try:
        started = datetime.now(UTC)
        publish(redis_url, [signal_json("AAPL", i) for i in range(100)])

        def done(pipeline: Any, total: int) -> bool:
            counts = statuses(pg_db, pipeline)
            return (
                sum(n for (s, _), n in counts.items() if s in ("succeeded", "rate_limited"))
                == total
            )

        wait_until(
            lambda: done(alice, 100),
            timeout=50,
            message="100 executions settled",
            detail=lambda: statuses(pg_db, alice),
        )
        assert datetime.now(UTC) - started < timedelta(seconds=60)  # all within the minute
        assert statuses(pg_db, alice) == {("succeeded", 0): 10, ("rate_limited", 0): 90}
        with pg_db.session() as session:
            errors = set(
                session.execute(
                    select(Execution.error).where(Execution.status == "rate_limited")
                ).scalars()
            )
        assert errors == {"owner 'alice' is over 10 executions per 60s"}

        # carol: 2 per 2 s; each replay after the window re-arms what was rate-limited.
        publish(redis_url, [signal_json("MSFT", i) for i in range(6)])
        wait_until(
            lambda: done(carol, 6),
            timeout=30,
            message="carol settled",
            detail=lambda: statuses(pg_db, carol),
        )
        assert statuses(pg_db, carol) == {("succeeded", 0): 2, ("rate_limited", 0): 4}
        replays = 0
        while statuses(pg_db, carol).get(("succeeded", 0), 0) < 6 and replays < 6:
            time.sleep(2.2)
            result = run_cli(env, "replay", "--ticker", "MSFT", "--last", "1d")
            assert result.returncode == 0, result.stderr
            replays += 1
            wait_until(
                lambda: done(carol, 6),
                timeout=30,
                message="replayed carol settled",
                detail=lambda: statuses(pg_db, carol),
            )
        assert statuses(pg_db, carol) == {("succeeded", 0): 6}
        assert replays == 2
    finally:
        for worker in workers:
            worker.stop()


def test_deferred_executions_all_run_within_the_limit(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object
) -> None:
    env = ops_env(
        tmp_path,
        pg_db,
        redis_url,
        operations={
            "rate_limits": {
                "on_limit": "defer",
                "max_defer_seconds": 120,
                "default": None,
                "owners": {"erin": {"executions": 5, "window_seconds": 3}},
            }
        },
    )
    (erin,) = add_pipelines(pg_db, redis_url, {"owner": "erin", "scanner": {"tickers": ["NVDA"]}})
    workers = two_workers(env, tmp_path)
    try:
        publish(redis_url, [signal_json("NVDA", i) for i in range(20)])
        wait_until(
            lambda: statuses(pg_db, erin) == {("succeeded", 0): 20},
            timeout=90,
            message="all deferred executions run",
            detail=lambda: statuses(pg_db, erin),
        )
        with pg_db.session() as session:
            starts = sorted(
                session.execute(
                    select(Execution.started_at).where(Execution.pipeline_id == erin)
                ).scalars()
            )
        # Any 6 consecutive starts span at least the window: never more than 5 per 3 s.
        gaps = [(starts[i + 5] - starts[i]).total_seconds() for i in range(len(starts) - 5)]
        assert min(gaps) >= 3.0 - 0.25, gaps
        assert sum("execution_deferred" in w.output() for w in workers) >= 1
    finally:
        for worker in workers:
            worker.stop()
