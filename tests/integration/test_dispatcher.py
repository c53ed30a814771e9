"""The trigger dispatcher on real services: two Celery worker processes, Redis, PostgreSQL.

Signals are published the way any publisher does it: plain JSON on the `trading-signals` topic
exchange with an `x-published-at` header. Expected (pipeline, signal) pairs come from a
brute-force matcher written here, independently of dispatcher.matching.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import func, select

from dispatcher.store import import_specs
from schemas.pipeline import PipelineSpec
from schemas.signal import Signal
from signalgen.bus.topology import DISPATCH_INTAKE_QUEUE, SIGNAL_EXCHANGE
from signalgen.storage import Database
from signalgen.storage.models import DeadLetter, Execution, SignalRecord
from tests.support.processes import CeleryProcess, bus_env, start_worker
from tests.support.wait import wait_until

pytestmark = [
    pytest.mark.integration,
    # celeryconfig's task_acks_on_failure_or_timeout (not ours) warns when the app finalizes.
    pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning"),
]

TICKERS = [f"T{i:03d}" for i in range(200)]
WATCHLIST = TICKERS[:6]
TYPES = [
    "mock",
    "golden_cross",
    "death_cross",
    "volatility_breakout",
    "price_level",
    "news",
    "external",
    "confluence",
]
BIASES = ["BULLISH", "BEARISH", "NEUTRAL"]
NOW = datetime(2025, 6, 2, 15, 0, tzinfo=UTC)


# -- data and the reference matcher ----------------------------------------------------------


def random_pipelines(
    rng: random.Random, count: int, *, webhook_url: str | None = None, webhook_share: float = 0.0
) -> list[dict[str, Any]]:
    pipelines = []
    for number in range(count):
        scanner: dict[str, Any] = (
            {"watchlist": True}
            if rng.random() < 0.05
            else {"tickers": rng.sample(TICKERS, rng.randint(1, 2))}
        )
        if rng.random() < 0.7:
            scanner["signal_types"] = rng.sample(TYPES, 1)
        if rng.random() < 0.3:
            scanner["biases"] = rng.sample(BIASES, rng.randint(1, 2))
        if rng.random() < 0.3:
            scanner["min_confidence"] = rng.choice([0.3, 0.5, 0.8])
        if number % 4 == 0:  # opted in to mock signals (the rest get them only by naming mock)
            scanner["include_mock"] = True
        executor: dict[str, Any] = {"kind": "record"}
        if webhook_url and rng.random() < webhook_share:
            executor = {
                "kind": "webhook",
                "url": webhook_url,
                "secret": "s" * 20,
                "timeout_seconds": 5,
                "max_attempts": 2,
                "backoff_seconds": 0.1,
            }
        pipelines.append(
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128))),
                "owner": f"u{number % 37}",
                "name": f"p{number}",
                "trigger_mode": "signal",
                "scanner": scanner,
                "executor": executor,
            }
        )
    return pipelines


def random_signals(rng: random.Random, count: int) -> list[dict[str, Any]]:
    signals = []
    for number in range(count):
        tickers = rng.sample(TICKERS[:40] if rng.random() < 0.3 else TICKERS, rng.randint(1, 2))
        bias = {
            t: {
                "ticker": t,
                "bias": rng.choice(BIASES),
                "confidence": rng.choice([0.1, 0.3, 0.5, 0.79, 0.8, 0.95]),
            }
            for t in tickers
            if rng.random() < 0.85
        }
        signals.append(
            {
                "signal_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "signal_type": rng.choice(TYPES),
                "tickers": tickers,
                "bias": bias,
                "metadata": {"n": number},
                "timestamp": NOW.isoformat(),
                "event_time": NOW.isoformat(),
                "source": "it-test",
            }
        )
    return signals


def reference_pairs(
    pipelines: list[dict[str, Any]], signals: list[dict[str, Any]]
) -> set[tuple[str, str]]:
    """Brute force: every pipeline against every signal, by the documented rule."""
    pairs = set()
    for signal in signals:
        for pipeline in pipelines:
            scanner = pipeline["scanner"]
            if scanner.get("signal_types") and signal["signal_type"] not in scanner["signal_types"]:
                continue
            wants_mock = scanner.get("include_mock") or "mock" in scanner.get("signal_types", ())
            if signal["signal_type"] == "mock" and not wants_mock:
                continue
            scanned = set(WATCHLIST) if scanner.get("watchlist") else set(scanner["tickers"])
            for ticker in signal["tickers"]:
                if ticker not in scanned:
                    continue
                bias = signal["bias"].get(ticker)
                wanted = scanner.get("biases")
                if wanted and (bias is None or bias["bias"] not in wanted):
                    continue
                if (bias["confidence"] if bias else 0.0) >= scanner.get("min_confidence", 0.0):
                    pairs.add((pipeline["id"], signal["signal_id"]))
                    break
    return pairs


# -- services ------------------------------------------------------------------------------------


@pytest.fixture
def dispatch_env(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object
) -> dict[str, str]:
    return bus_env(
        tmp_path,
        redis_url=redis_url,
        database_url=pg_db.url,
        tickers=WATCHLIST,
        generators={"mock_generator": {"type": "mock", "enabled": False, "interval_seconds": 60}},
        EXECUTION_LEASE_SECONDS="4",
        CLAIMED_GRACE_SECONDS="2",
        REPAIR_GRACE_SECONDS="3",
        REPAIR_INTERVAL_SECONDS="1",
    )


@pytest.fixture
def workers(dispatch_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, CeleryProcess]]:
    started: dict[str, CeleryProcess] = {}
    try:
        for name in ("w1", "w2"):
            started[name] = start_worker(
                dispatch_env, tmp_path / f"{name}.log", name=name, concurrency=2, wait=False
            )
        for worker in started.values():
            worker.wait_for("ready.", timeout=60)
        yield started
    finally:
        for worker in started.values():
            worker.stop()


def publish(broker_url: str, signals: list[dict[str, Any]], times: int = 1) -> None:
    with Connection(broker_url) as connection:
        producer = connection.Producer()
        for _ in range(times):
            for data in signals:
                signal = Signal.model_validate(data)
                producer.publish(
                    signal.to_json().encode(),
                    exchange=SIGNAL_EXCHANGE,
                    routing_key=signal.routing_key,
                    content_type="application/json",
                    content_encoding="utf-8",
                    headers={"x-published-at": time.time()},
                    declare=[SIGNAL_EXCHANGE, DISPATCH_INTAKE_QUEUE],
                    retry=True,
                )


def publish_recorded_signals(db: Database, broker_url: str, signals: list[dict[str, Any]]) -> None:
    """Publish as the product does: record each signal (history + outbox), then publish it.

    A recorded signal survives what Kombu's Redis transport cannot: a worker SIGKILLed between
    its BRPOP and the bookkeeping of the unacked message loses that message (a window of a few
    hundred microseconds); the repair sweep re-dispatches a published, never-dispatched signal
    from its row. A signal another service put on the exchange unrecorded has no such row.
    """
    from signalgen.bus import publish_recorded, record_signals
    from signalgen.bus.publisher import KombuPublisher

    models = [Signal.model_validate(data) for data in signals]
    with db.session() as session:
        recorded = record_signals(session, models)
    publisher = KombuPublisher(broker_url)
    try:
        outcome = publish_recorded(db, publisher, recorded)
    finally:
        publisher.close()
    assert outcome.published == len(models), outcome


def send_task(broker_url: str, name: str) -> None:
    from tasks import app

    with Connection(broker_url) as connection:
        app.send_task(name, connection=connection)


def restore_unacked(broker_url: str) -> None:
    """What Redis does for a SIGKILLed worker once the visibility timeout (an hour in
    celeryconfig) passes: its unacked messages go back to their queues. Done now, for every
    unacked message (the live worker's included: those become duplicates, to be absorbed)."""
    with Connection(broker_url, transport_options={"visibility_timeout": 0}) as connection:
        channel = connection.default_channel
        # As a worker does: know the topic exchange, or its messages are not routed back.
        SIGNAL_EXCHANGE.bind(channel).declare()
        channel.qos.restore_visible(num=100_000)


def settled(db: Database, expected: int, timeout: float, on_wait: Any = None) -> dict[str, int]:
    counts: dict[str, int] = {}

    def all_succeeded() -> bool:
        nonlocal counts
        with db.session() as session:
            counts = dict(
                session.execute(  # type: ignore[arg-type]
                    select(Execution.status, func.count()).group_by(Execution.status)
                ).all()
            )
        if counts.get("succeeded", 0) >= expected and set(counts) == {"succeeded"}:
            return True
        if on_wait is not None:
            on_wait()
        return False

    wait_until(
        all_succeeded,
        timeout=timeout,
        interval=0.5,
        message=f"executions did not settle, expected {expected} succeeded",
        detail=lambda: counts,
    )
    time.sleep(1.0)  # let any straggling duplicate land before the final check
    return counts


def executed_pairs(db: Database) -> tuple[Counter[tuple[str, str]], dict[tuple[str, str], int]]:
    with db.session() as session:
        rows = session.execute(
            select(Execution.pipeline_id, Execution.signal_id, Execution.attempts, Execution.status)
        ).all()
    pairs = Counter((str(p), str(s)) for p, s, _, status in rows if status == "succeeded")
    attempts = {(str(p), str(s)): a for p, s, a, _ in rows}
    return pairs, attempts


def load(db: Database, redis_url: str, pipelines: list[dict[str, Any]]) -> None:
    import_specs(db, [PipelineSpec.model_validate(p) for p in pipelines], redis_url=redis_url)


# -- tests ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("times", [1, 2], ids=["published-once", "published-twice"])
def test_thousand_signals_thousand_pipelines_exact_pairs_once(
    pg_db: Database, redis_url: str, workers: dict[str, CeleryProcess], times: int
) -> None:
    rng = random.Random(20250602)
    pipelines = random_pipelines(rng, 1000)
    signals = random_signals(rng, 1000)
    expected = reference_pairs(pipelines, signals)
    assert 1500 < len(expected) < 8000, len(expected)  # the data set is what we think it is
    load(pg_db, redis_url, pipelines)
    publish(redis_url, signals, times=times)
    settled(pg_db, len(expected), timeout=120)
    pairs, attempts = executed_pairs(pg_db)
    assert set(pairs) == expected
    assert max(pairs.values()) == 1
    assert set(attempts.values()) == {1}, "an execution was started twice"
    with pg_db.session() as session:
        outcomes = dict(
            session.execute(  # type: ignore[arg-type]
                select(SignalRecord.dispatch_status, func.count()).group_by(
                    SignalRecord.dispatch_status
                )
            ).all()
        )
        unmatched_expected = len({s["signal_id"] for s in signals} - {s for _, s in expected})
        assert outcomes.get("unmatched", 0) == unmatched_expected
        assert sum(outcomes.values()) == len(signals)
        latencies = session.execute(select(Execution.latency_seconds)).scalars().all()
        assert all(value is not None and 0 <= value < 120 for value in latencies)


def test_invalid_and_pickled_messages_are_dead_lettered(
    pg_db: Database, redis_url: str, workers: dict[str, CeleryProcess]
) -> None:
    marker = f"/tmp/sg-pickle-{uuid.uuid4().hex}"
    # A pickle that would create `marker` if anything ever unpickled it.
    evil = b"cos\nsystem\n(S'touch " + marker.encode() + b"'\ntR."
    good = random_signals(random.Random(1), 1)[0]
    with Connection(redis_url) as connection:
        producer = connection.Producer()
        common = {"exchange": SIGNAL_EXCHANGE, "declare": [SIGNAL_EXCHANGE, DISPATCH_INTAKE_QUEUE]}
        producer.publish(
            evil,
            routing_key="signal.mock.AAPL",
            content_type="application/x-python-serialize",
            content_encoding="binary",
            **common,
        )
        producer.publish(
            b"{not json",
            routing_key="signal.mock.AAPL",
            content_type="application/json",
            content_encoding="utf-8",
            **common,
        )
        bad = dict(good, tickers=["aapl"], bias={})
        producer.publish(
            json.dumps(bad).encode(),
            routing_key="signal.mock.AAPL",
            content_type="application/json",
            content_encoding="utf-8",
            **common,
        )
        producer.publish(
            json.dumps(good).encode(),
            routing_key="signal.mock.T001",
            content_type="application/json",
            content_encoding="utf-8",
            **common,
        )

    def letters_and_record() -> tuple[list[DeadLetter], SignalRecord | None]:
        with pg_db.session() as session:
            letters = list(session.execute(select(DeadLetter)).scalars())
            recorded = session.get(SignalRecord, uuid.UUID(good["signal_id"]))
        return letters, recorded

    def three_letters_and_dispatched() -> tuple[list[DeadLetter], SignalRecord | None] | None:
        letters, recorded = letters_and_record()
        done = len(letters) >= 3 and recorded is not None and recorded.dispatch_status != "pending"
        return (letters, recorded) if done else None

    letters, recorded = wait_until(
        three_letters_and_dispatched,
        timeout=30,
        interval=0.3,
        message="three dead letters and the good signal dispatched",
        detail=lambda: [letter.reason for letter in letters_and_record()[0]],
    )
    reasons = sorted(letter.reason for letter in letters)
    assert len(letters) == 3, reasons
    assert any("content type 'application/x-python-serialize' refused" in r for r in reasons)
    assert any(r.startswith("invalid signal: tickers.0") for r in reasons)
    assert any(letter.body == evil for letter in letters)
    assert not Path(marker).exists()
    assert recorded is not None and recorded.dispatch_status == "unmatched"
    assert recorded.matched_count == 0
    for worker in workers.values():
        assert worker.proc.poll() is None


class SlowHook(BaseHTTPRequestHandler):
    received: Counter[str] = Counter()
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(0.2)
        with self.lock:
            self.received[self.headers["X-Idempotency-Key"]] += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.slow
@pytest.mark.parametrize("victim_phase", ["mid-dispatch", "mid-execution"])
def test_sigkill_a_worker_still_exactly_once(
    pg_db: Database,
    redis_url: str,
    workers: dict[str, CeleryProcess],
    dispatch_env: dict[str, str],
    tmp_path: Path,
    victim_phase: str,
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHook)
    SlowHook.received = Counter()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rng = random.Random(7)
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        pipelines = random_pipelines(
            rng, 1000, webhook_url=url, webhook_share=0.02 if victim_phase == "mid-execution" else 0
        )
        signals = random_signals(rng, 400)
        expected = reference_pairs(pipelines, signals)
        load(pg_db, redis_url, pipelines)
        publish_recorded_signals(pg_db, redis_url, signals)
        # Kill once work is under way: dispatch still going, or webhooks in flight.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with pg_db.session() as session:
                running = session.execute(
                    select(func.count()).where(Execution.status == "running")
                ).scalar_one()
                claimed = session.execute(select(func.count()).select_from(Execution)).scalar_one()
            if (victim_phase == "mid-dispatch" and claimed > 50) or (
                victim_phase == "mid-execution" and running > 0 and SlowHook.received
            ):
                break
            time.sleep(0.05)
        workers["w1"].kill()
        workers["w1"].stop()
        workers["w1"] = start_worker(
            dispatch_env, tmp_path / "w1-again.log", name="w1b", concurrency=2
        )
        restore_unacked(redis_url)

        # Beat's role: the periodic tick recovers executions whose worker died; the repair
        # sweep re-sends what a message lost in the kill's BRPOP window left undone.
        def beat() -> None:
            send_task(redis_url, "pipelines.fire_periodic")
            send_task(redis_url, "signals.repair")

        settled(pg_db, len(expected), timeout=90, on_wait=beat)
        pairs, attempts = executed_pairs(pg_db)
        assert set(pairs) == expected
        assert max(pairs.values()) == 1
        restarted = [pair for pair, count in attempts.items() if count > 1]
        # Only what the killed worker was running (2 pool processes) may have started twice.
        assert len(restarted) <= 2, restarted
        deliveries = SlowHook.received
        assert all(count == 1 or count == 2 for count in deliveries.values())
        assert sum(1 for count in deliveries.values() if count == 2) <= len(restarted)
    finally:
        server.shutdown()
        server.server_close()


def test_signals_the_broker_lost_are_repaired_from_their_rows(
    pg_db: Database, redis_url: str, workers: dict[str, CeleryProcess]
) -> None:
    """The state a message lost in transit leaves (a worker SIGKILLed in Kombu's BRPOP window,
    Redis restarted empty): recorded, published, never dispatched, and nothing on the bus. The
    repair sweep dispatches each from its row, once. The signals carry an old timestamp (June
    2025): the sweep's horizon counts from recording, so they are not mistaken for history
    (the cause of this suite's intermittent SIGKILL failure: the one lost signal was never
    re-sent)."""
    from signalgen.bus import record_signals

    rng = random.Random(11)
    pipelines = random_pipelines(rng, 300)
    signals = random_signals(rng, 60)
    expected = reference_pairs(pipelines, signals)
    assert len(expected) > 30, len(expected)
    load(pg_db, redis_url, pipelines)
    with pg_db.session() as session:
        record_signals(session, [Signal.model_validate(data) for data in signals])
    from sqlalchemy import update

    with pg_db.session() as session:  # the broker took them (and then lost them) 10 s ago
        session.execute(
            update(SignalRecord).values(published_at=datetime.now(UTC) - timedelta(seconds=10))
        )
    send_task(redis_url, "signals.repair")
    settled(pg_db, len(expected), timeout=60)
    pairs, attempts = executed_pairs(pg_db)
    assert set(pairs) == expected and max(pairs.values()) == 1
    assert set(attempts.values()) == {1}
    with pg_db.session() as session:
        pending = session.execute(
            select(func.count()).where(SignalRecord.dispatch_status == "pending")
        ).scalar_one()
    assert pending == 0


def test_two_concurrent_periodic_ticks_claim_a_slot_once(
    pg_db: Database, redis_url: str, workers: dict[str, CeleryProcess]
) -> None:
    created = datetime.now(UTC) - timedelta(hours=1)
    specs = [
        {
            "owner": "u",
            "name": f"every-{n}",
            "trigger_mode": "periodic",
            "schedule": {"interval_seconds": 3600} if n % 2 else {"crontab": "0 * * * *"},
        }
        for n in range(50)
    ]
    import_specs(pg_db, [PipelineSpec.model_validate(s) for s in specs], redis_url=redis_url)
    with pg_db.session() as session:
        from sqlalchemy import update

        from signalgen.storage.models import Pipeline

        session.execute(update(Pipeline).values(created_at=created))
    for _ in range(6):
        send_task(redis_url, "pipelines.fire_periodic")
    settled(pg_db, 50, timeout=30)
    with pg_db.session() as session:
        rows = session.execute(
            select(Execution.pipeline_id, Execution.idempotency_key, Execution.attempts)
        ).all()
    assert len(rows) == 50
    assert len({pipeline_id for pipeline_id, _, _ in rows}) == 50
    assert all(key.startswith("slot:") and key.endswith(":00:00+00:00") for _, key, _ in rows)
    assert all(attempts == 1 for _, _, attempts in rows)


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """A fresh RabbitMQ vhost (deleted afterwards), or skip/fail when RabbitMQ is missing."""
    from tests.support.services import rabbitmq_vhost

    with rabbitmq_vhost() as url:
        yield url


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_fan_out_of_one_signal_to_many_pipelines_on_each_broker(
    pg_db: Database,
    redis_url: str,
    dispatch_env: dict[str, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    broker: str,
) -> None:
    """One signal matching 600 pipelines: every execution enqueued by the batched fan-out,
    run by a real worker, once, on Redis and on RabbitMQ alike."""
    broker_url = redis_url if broker == "redis" else request.getfixturevalue("rabbitmq_url")
    # 20 owners: 30 executions each stays under the default per-owner execution limit.
    pipelines = [
        {
            "owner": f"u{n % 20}",
            "name": f"p{n}",
            "trigger_mode": "signal",
            "scanner": {"tickers": ["T001", f"T{100 + n % 50:03d}"]},
        }
        for n in range(600)
    ]
    load(pg_db, redis_url, pipelines)
    signal = random_signals(random.Random(3), 1)[0]
    # Not mock (random_signals may draw it): mock signals reach only opted-in pipelines.
    signal.update(tickers=["T001"], bias={}, signal_type="golden_cross")
    env = dict(dispatch_env, BROKER_URL=broker_url)
    worker = start_worker(
        env, tmp_path / f"fanout-{broker}.log", name=f"fan-{broker}", concurrency=2
    )
    try:
        publish(broker_url, [signal])
        settled(pg_db, 600, timeout=60)
    finally:
        worker.stop()
    pairs, attempts = executed_pairs(pg_db)
    assert len(pairs) == 600 and max(pairs.values()) == 1
    assert set(attempts.values()) == {1}
    with pg_db.session() as session:
        record = session.get(SignalRecord, uuid.UUID(signal["signal_id"]))
    assert record is not None and record.matched_count == 600
    assert record.dispatch_status == "dispatched"


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_lone_message_goes_out_as_a_batched_one_does(
    redis_url: str, request: pytest.FixtureRequest, broker: str
) -> None:
    """`enqueue_many` sends a single message without `Producer.batch` (one LPUSH on Redis, no
    pipeline): the same task message, to the same queue, as the same call in a batch."""
    from celery import Celery
    from kombu import Queue

    from dispatcher.fanout import enqueue_many

    broker_url = redis_url if broker == "redis" else request.getfixturevalue("rabbitmq_url")
    app = Celery("fanout-lone", broker=broker_url, set_as_current=False)
    queue = f"lone-{uuid.uuid4().hex[:8]}"
    app.conf.task_queues = [Queue(queue)]
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((n, 1.5), {}) for n in range(3)]
    alone = enqueue_many(app, "pipelines.execute", calls[:1], queue=queue, root_id="r")
    batched = enqueue_many(app, "pipelines.execute", calls, queue=queue, root_id="r")
    got: list[Any] = []
    with app.connection_for_read() as connection, connection.SimpleQueue(queue) as messages:
        while len(got) < 4:
            message = messages.get(timeout=5)
            message.ack()
            got.append(message)
        with pytest.raises(messages.Empty):
            messages.get(timeout=0.2)
    assert [m.headers["id"] for m in got] == alone + batched
    assert [m.decode()[0] for m in got] == [[0, 1.5], [0, 1.5], [1, 1.5], [2, 1.5]]

    def shape(message: Any) -> tuple[Any, ...]:
        headers = {k: v for k, v in message.headers.items() if k != "id"}
        return headers, message.body, message.content_type, message.content_encoding

    assert shape(got[0]) == shape(got[1])
    assert got[0].headers["root_id"] == "r" and got[0].headers["task"] == "pipelines.execute"
