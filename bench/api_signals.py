"""GET /api/v1/signals?ticker=... over HTTP with 1,000,000 stored signals, beside the same query
run directly in PostgreSQL (psycopg, same SQL shape, same tickers) in the same run.

The data set lives in a dedicated database (`sg_bench_api_signals`, on BENCH_PG_ADMIN_URL or
TEST_PG_ADMIN_URL, default postgres@127.0.0.1) and is generated inside PostgreSQL with
INSERT .. SELECT generate_series (the fastest bulk path; no rows cross the wire). It is built
once (schema through the migrations, as `signalgen api` expects) and reused: the database's
comment records what was loaded. Set BENCH_RELOAD=1 to rebuild.

The client is measured, not assumed away: the API through one keep-alive http.client
connection, the raw query through one psycopg connection (fresh cursor, rows fetched), the two
interleaved request by request so both see the same load on a shared machine.

The service is `signalgen api` in its own process (one uvicorn worker), with a real API key,
rate limiting on (limit set high) and Redis at REDIS_URL (default 127.0.0.1:6379/0).
Goal: p99 under 20 ms and within 3x of the raw query's p99.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

ROWS = 1_000_000
TICKERS = 2_000
DATASET = f"v1:{ROWS}:{TICKERS}"
DB_NAME = "sg_bench_api_signals"
ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL") or os.environ.get(
    "TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
SEQUENTIAL_REQUESTS = 2_000
THROUGHPUT_SECONDS = 5.0
THROUGHPUT_THREADS = 4
PAGE = 50
GOAL_P99_MS = 20.0
GOAL_RATIO = 3.0
PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: The API's query for one page of a ticker (signalgen.interfaces.http.queries.list_signals), as
#: SQL.
RAW_QUERY = """
SELECT s.signal_id, s.signal_type, s.source, s.tickers, s.created_at, s.event_time, s.payload,
       s.published_at, s.dispatch_status, s.dispatched_at, s.matched_count
FROM signal_tickers t JOIN signals s ON s.signal_id = t.signal_id
WHERE t.ticker = %s
ORDER BY t.created_at DESC, t.signal_id DESC
LIMIT %s
"""

LOAD_SIGNALS = """
INSERT INTO signals (signal_id, signal_type, source, tickers, event_time, created_at,
                     recorded_at, payload, routing_key, published_at, publish_attempts,
                     dispatch_status, dispatched_at, matched_count)
SELECT md5('bench-signal-' || i)::uuid, kind, 'bench', json_build_array(ticker), moment,
       moment, moment, json_build_object(
           'schema_version', 1, 'signal_id', md5('bench-signal-' || i)::uuid,
           'signal_type', kind, 'tickers', json_build_array(ticker),
           'bias', json_build_object(ticker, json_build_object(
               'ticker', ticker, 'bias', 'BULLISH', 'confidence', 0.75,
               'reasoning', 'SMA50 crossed above SMA200')),
           'metadata', json_build_object('sma_short', 101.5, 'sma_long', 99.25, 'n', i),
           'timestamp', moment, 'event_time', moment, 'source', 'bench')::text,
       'signal.' || kind || '.' || ticker, moment, 1, 'dispatched', moment, 1
FROM (
    SELECT i, 'T' || lpad((i % :tickers)::text, 4, '0') AS ticker,
           (ARRAY['golden_cross', 'death_cross', 'news', 'mock'])[1 + i % 4] AS kind,
           timestamptz '2020-01-01 00:00:00+00' + make_interval(secs => i * 97) AS moment
    FROM generate_series(1, :rows) AS i
) AS generated
"""

LOAD_TICKERS = """
INSERT INTO signal_tickers (ticker, created_at, signal_id)
SELECT tickers ->> 0, created_at, signal_id FROM signals
"""


def database_url() -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME


def ensure_dataset() -> None:
    """Create and fill the bench database unless it already holds this data set."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": DB_NAME}
        ).first()
        if exists and os.environ.get("BENCH_RELOAD"):
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": DB_NAME},
            )
            connection.execute(text(f'DROP DATABASE "{DB_NAME}"'))
            exists = None
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    admin.dispose()

    import signalgen.storage.models  # noqa: F401  (registers every table)
    from signalgen.storage import Database
    from signalgen.storage.base import Base
    from signalgen.storage.engine import SchemaMismatch, ensure_schema

    database = Database(database_url())
    loaded = dataset_marker(database)
    if loaded == DATASET:
        try:  # the service migrates at start: an older bench database gets stamped here
            ensure_schema(database)
        except SchemaMismatch as exc:
            print(f"rebuilding {DB_NAME}: {exc}")
            loaded = None
    if loaded == DATASET:
        print(f"data set {DATASET} already loaded in {DB_NAME} (BENCH_RELOAD=1 rebuilds)")
        database.dispose()
        return
    started = time.perf_counter()
    Base.metadata.drop_all(database.engine)
    with database.engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    ensure_schema(database)  # through the migrations, as `signalgen api` expects
    with database.engine.begin() as connection:
        connection.execute(text(LOAD_SIGNALS), {"rows": ROWS, "tickers": TICKERS})
        connection.execute(text(LOAD_TICKERS))
        connection.execute(text(f"COMMENT ON DATABASE \"{DB_NAME}\" IS '{DATASET}'"))
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE signals"))
        c.execute(text("VACUUM ANALYZE signal_tickers"))
    print(
        f"loaded {ROWS:,} signals over {TICKERS:,} tickers in {time.perf_counter() - started:.1f} s"
    )
    database.dispose()


def dataset_marker(database: Any) -> str | None:
    """What the bench database holds: the database's comment (outside the schema, which must
    equal the models). A `bench_meta` table from older runs is turned into that comment."""
    with database.engine.begin() as connection:
        if connection.execute(text("SELECT to_regclass('bench_meta')")).scalar():
            legacy = connection.execute(text("SELECT dataset FROM bench_meta")).scalar()
            connection.execute(text("DROP TABLE bench_meta"))
            if legacy:
                connection.execute(text(f"COMMENT ON DATABASE \"{DB_NAME}\" IS '{legacy}'"))
        marker = connection.execute(
            text(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :n"
            ),
            {"n": DB_NAME},
        ).scalar()
    return str(marker) if marker else None


def api_key() -> str:
    from signalgen.interfaces.http.auth import UserExists, add_user, create_key
    from signalgen.storage import Database

    database = Database(database_url())
    with database.session() as session:
        with contextlib.suppress(UserExists):
            add_user(session, "bench")
        key = create_key(session, "bench", label="bench run")[1]
    database.dispose()
    return key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(port: int) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        DATABASE_URL=database_url(),
        REDIS_URL=REDIS_URL,
        API_RATE_LIMIT="1000000000",
        LOG_LEVEL="WARNING",
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from signalgen.interfaces.cli import run; run()",
            "api",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
        if process.poll() is not None:
            raise RuntimeError(
                f"signalgen api exited: {process.stderr.read().decode()[-2000:]}"
                if process.stderr
                else "signalgen api exited"
            )
    process.kill()
    raise RuntimeError("signalgen api did not start in 30 s")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


def summary(name: str, latencies: list[float]) -> tuple[float, float]:
    ms = [value * 1000 for value in latencies]
    p50, p99 = statistics.median(ms), percentile(ms, 99.0)
    print(
        f"{name:<34} n={len(ms):>5}  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
        f"max {max(ms):6.2f} ms  sequential {len(ms) / (sum(latencies)):7.0f} req/s"
    )
    return p50, p99


class ApiClient:
    """One keep-alive HTTP/1.1 connection (http.client): about the least a Python client can
    add per request, so the numbers are the server's. A request is timed from sending it to
    having read the whole body."""

    def __init__(self, port: int, key: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {key}"}

    def get(self, ticker: str) -> tuple[int, bytes]:
        self.connection.request(
            "GET", f"/api/v1/signals?ticker={ticker}&limit={PAGE}", headers=self.headers
        )
        response = self.connection.getresponse()
        return response.status, response.read()

    @staticmethod
    def check(result: tuple[int, bytes]) -> None:
        assert result[0] == 200, result[1][:300]

    def close(self) -> None:
        self.connection.close()


class RawClient:
    """The API's query straight on PostgreSQL: one psycopg connection, a fresh cursor per
    query, same SQL and parameters, timed from execute to having fetched every row."""

    def __init__(self) -> None:
        import psycopg

        url = database_url().replace("postgresql+psycopg://", "postgresql://")
        self.connection = psycopg.connect(url, autocommit=True)

    def get(self, ticker: str) -> int:
        with self.connection.cursor() as cursor:
            cursor.execute(RAW_QUERY, (ticker, PAGE + 1))
            return len(cursor.fetchall())

    @staticmethod
    def check(rows: int) -> None:
        assert rows == PAGE + 1, rows

    def close(self) -> None:
        self.connection.close()


def sequential(
    api: ApiClient, raw: RawClient, tickers: list[str]
) -> tuple[list[float], list[float]]:
    """Both sides interleaved request by request (alternating which goes first), so both see
    the same machine load: on a shared box, load drifts over a run."""
    api_latencies, raw_latencies = [], []

    def one_api(ticker: str) -> None:
        started = time.perf_counter()
        result = api.get(ticker)
        api_latencies.append(time.perf_counter() - started)
        api.check(result)

    def one_raw(ticker: str) -> None:
        started = time.perf_counter()
        rows = raw.get(ticker)
        raw_latencies.append(time.perf_counter() - started)
        raw.check(rows)

    for number, ticker in enumerate(tickers):
        first, second = (one_api, one_raw) if number % 2 == 0 else (one_raw, one_api)
        first(ticker)
        second(ticker)
    return api_latencies, raw_latencies


def throughput(make_client: Any, tickers: list[str]) -> float:
    """Requests/s with THROUGHPUT_THREADS client threads, each with its own connection."""
    done = [0] * THROUGHPUT_THREADS
    clients = [make_client() for _ in range(THROUGHPUT_THREADS)]
    stop = time.monotonic() + THROUGHPUT_SECONDS

    def worker(number: int) -> None:
        rng = random.Random(number)
        client = clients[number]
        while time.monotonic() < stop:
            client.check(client.get(rng.choice(tickers)))
            done[number] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THROUGHPUT_THREADS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    for client in clients:
        client.close()
    return sum(done) / elapsed


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run() -> None:
    ensure_dataset()
    key = api_key()
    rng = random.Random(7)
    tickers = [f"T{rng.randrange(TICKERS):04d}" for _ in range(SEQUENTIAL_REQUESTS)]
    port = free_port()
    service = start_service(port)
    load_before = load_average()
    try:
        api, raw = ApiClient(port, key), RawClient()
        sequential(api, raw, tickers[:200])  # warm-up: connections, prepared plans, caches
        status, body = api.get(tickers[0])
        first = json.loads(body)
        assert status == 200 and len(first["items"]) == PAGE and first["next_cursor"]
        api_latencies, raw_latencies = sequential(api, raw, tickers)
        api.close()
        raw.close()
        api_rps = throughput(lambda: ApiClient(port, key), tickers)
        raw_rps = throughput(RawClient, tickers)
    finally:
        service.terminate()
        service.wait(15)
    print(
        f"{ROWS:,} signals, {TICKERS:,} tickers, pages of {PAGE}, same tickers both sides; "
        f"{os.cpu_count()} cores, load average {load_before} before, {load_average()} after"
    )
    print(
        "client: one keep-alive http.client connection (API) and one psycopg connection "
        "(raw, fresh cursor per query, rows fetched), requests interleaved; latency = send "
        "to last byte / last row"
    )
    _, raw_p99 = summary("raw query (psycopg, PostgreSQL)", raw_latencies)
    _, api_p99 = summary("GET /api/v1/signals?ticker=", api_latencies)
    print(
        f"throughput with {THROUGHPUT_THREADS} client threads (one connection each, "
        f"{THROUGHPUT_SECONDS:.0f} s): API {api_rps:,.0f} req/s (one uvicorn worker), "
        f"raw {raw_rps:,.0f} req/s"
    )
    ratio = api_p99 / raw_p99
    print(
        f"p99 ratio API/raw: {ratio:.2f}x (goal <= {GOAL_RATIO}x); API p99 {api_p99:.2f} ms "
        f"(goal < {GOAL_P99_MS} ms): "
        f"{'met' if api_p99 < GOAL_P99_MS and ratio <= GOAL_RATIO else 'NOT met'}"
    )
