"""Fault-injection harness: a bus on real services, a load generator, an injector, a checker.

- `Stack`: one PostgreSQL database, one broker (a locked Redis db, our own redis-server, or a
  RabbitMQ vhost), 1,000 record pipelines, several real `celery worker` processes and beats.
- `LoadGenerator`: publishes signals at a steady rate through the real publishing path
  (`record_signals` in a transaction = history + outbox, then `publish_recorded`), retrying a
  failed record with back-off (as `signals.generate` does); its `recorded` dict is the
  publisher's own record of what it published. It can publish some signals twice.
- `inject_hostile`: malformed and hostile messages on the exchange and the Celery queues.
- `check`: from the database, the publisher's record and the workers' logs: signals lost,
  executions missing, executions duplicated (a (pipeline, signal) with two rows, or one
  execution whose executor ran to completion twice: each completed run logs one
  `pipeline_executed` event, which is the side-effect counter).

Expected executions come from a plain dict (pipeline n scans ticker n % 250 alone), not from
dispatcher.matching.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kombu import Connection
from sqlalchemy import ColumnElement, Row, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from dispatcher.store import import_specs
from schemas.pipeline import PipelineSpec
from schemas.signal import Signal
from signalgen.bus import KombuPublisher, publish_recorded, record_signals
from signalgen.bus.topology import DISPATCH_INTAKE_QUEUE, SIGNAL_EXCHANGE
from signalgen.storage import Database
from signalgen.storage.models import DeadLetter, Execution, SignalRecord
from tests.support.ops import ticker_signal
from tests.support.processes import CeleryProcess, service_env, start_beat, start_worker
from tests.support.wait import wait_until

TICKERS = [f"F{i:03d}" for i in range(250)]
PIPELINE_COUNT = 1000
PIPELINE_NAMESPACE = uuid.UUID("4d7f6a52-1b0e-4c4e-9a55-0f3a1c2d9e11")
SOURCE = "fault-load"

#: Tuning of the workers under test: short leases and graces so a scenario settles in seconds.
FAULT_ENV = {
    "EXECUTION_LEASE_SECONDS": "10",
    "CLAIMED_GRACE_SECONDS": "5",
    "REPAIR_INTERVAL_SECONDS": "3",
    "REPAIR_GRACE_SECONDS": "8",
    "OUTBOX_SWEEP_AGE_SECONDS": "3",
    "PIPELINE_INDEX_MAX_AGE_SECONDS": "30",
}


def pipeline_id(number: int) -> uuid.UUID:
    return uuid.uuid5(PIPELINE_NAMESPACE, f"p{number}")


def pipeline_specs(count: int = PIPELINE_COUNT) -> list[dict[str, Any]]:
    """Pipeline n scans ticker n % 250 (4 pipelines per ticker), record executor."""
    return [
        {
            "id": str(pipeline_id(n)),
            "owner": f"u{n % 50}",
            "name": f"fault-{n}",
            "trigger_mode": "signal",
            # The load is mock signals (and the mock generator): these pipelines opt in.
            "scanner": {"tickers": [TICKERS[n % len(TICKERS)]], "include_mock": True},
            "executor": {"kind": "record"},
        }
        for n in range(count)
    ]


def periodic_specs(count: int, interval_seconds: int) -> list[dict[str, Any]]:
    return [
        {
            "id": str(pipeline_id(100_000 + n)),
            "owner": f"u{n}",
            "name": f"tick-{n}",
            "trigger_mode": "periodic",
            "schedule": {"interval_seconds": interval_seconds},
        }
        for n in range(count)
    ]


def pipelines_by_ticker(count: int = PIPELINE_COUNT) -> dict[str, list[uuid.UUID]]:
    out: dict[str, list[uuid.UUID]] = {}
    for n in range(count):
        out.setdefault(TICKERS[n % len(TICKERS)], []).append(pipeline_id(n))
    return out


def make_signal(number: int, ticker: str, run: str) -> Signal:
    return ticker_signal(
        ticker,
        f"{run}|{number}",
        source=SOURCE,
        at=datetime.now(UTC),
        reasoning="fault load",
        metadata={"n": number},
    )


# -- brokers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A redis-server child on a free port (nothing shared is restarted). `appendonly`: AOF
    with the default `appendfsync everysec`, so a crash loses at most about a second."""

    def __init__(self, workdir: Path, *, appendonly: bool, password: str | None = None) -> None:
        self.port = free_port()
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--appendonly",
            "yes" if self.appendonly else "no",
            *(["--requirepass", self.password] if self.password else []),
        ]
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        import redis

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                client = redis.Redis(port=self.port, socket_timeout=1, password=self.password)
                if client.ping():
                    client.close()
                    # Loading an AOF answers LOADING until done.
                    return
            time.sleep(0.1)
        raise RuntimeError(f"own redis-server on {self.port} did not start")

    def crash(self) -> None:
        """SIGKILL: no shutdown save; with AOF, what was fsynced survives."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.crash()
        shutil.rmtree(self.dir, ignore_errors=True)


from tests.support.services import rabbitmq_vhost  # noqa: E402,F401  (re-exported for the suite)

# -- the bus under test ---------------------------------------------------------------------------


@dataclass
class Stack:
    """Workers and beats of one scenario on (db, broker). Every process is killed on `close`."""

    workdir: Path
    db: Database
    broker_url: str
    redis_url: str
    generators: dict[str, Any] = field(default_factory=dict)
    watchlist: list[str] = field(default_factory=lambda: TICKERS[:5])
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: dict[str, CeleryProcess] = field(default_factory=dict)
    beats: dict[str, CeleryProcess] = field(default_factory=dict)
    retired: list[CeleryProcess] = field(default_factory=list)
    _generation: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "generators.json").write_text(json.dumps({"generators": self.generators}))
        (self.workdir / "watchlist.json").write_text(json.dumps({"tickers": self.watchlist}))

    @property
    def env(self) -> dict[str, str]:
        env = service_env(
            BROKER_URL=self.broker_url,
            REDIS_URL=self.redis_url,
            DATABASE_URL=self.db.url,
            GENERATORS_CONFIG_PATH=str(self.workdir / "generators.json"),
            WATCHLIST_CONFIG_PATH=str(self.workdir / "watchlist.json"),
            LOG_LEVEL="INFO",
            LOG_FORMAT="json",
            **FAULT_ENV,
        )
        for name in (
            "MOCK_GENERATOR_INTERVAL_SECONDS",
            "GOLDEN_CROSS_CHECK_INTERVAL_SECONDS",
            "FINNHUB_API_KEY",
            "BEAT_LOCK",
        ):
            env.pop(name, None)
        env.update(self.extra_env)
        # A knob to show that a fault bites: e.g. FAULTS_EXTRA_ENV='{"REPAIR_INTERVAL_SECONDS":
        # "100000"}' turns the repair sweep off, and the Redis scenarios must then fail.
        env.update(json.loads(os.environ.get("FAULTS_EXTRA_ENV", "{}")))
        return env

    def load_pipelines(self, specs: list[dict[str, Any]]) -> None:
        import_specs(
            self.db, [PipelineSpec.model_validate(s) for s in specs], redis_url=self.redis_url
        )

    def _log(self, name: str) -> Path:
        self._generation[name] += 1
        return self.workdir / f"{name}.{self._generation[name]}.log"

    def start_workers(self, count: int, concurrency: int = 2) -> None:
        for number in range(count):
            name = f"w{number}"
            self.workers[name] = start_worker(
                self.env, self._log(name), name=name, concurrency=concurrency, wait=False
            )
        for worker in self.workers.values():
            worker.wait_for("ready.", timeout=90)

    def kill_worker(self, name: str) -> None:
        worker = self.workers[name]
        worker.kill()
        worker.stop()
        self.retired.append(worker)

    def restart_worker(self, name: str, concurrency: int = 2, wait: bool = False) -> None:
        self.workers[name] = start_worker(
            self.env, self._log(name), name=name, concurrency=concurrency, wait=wait
        )

    def start_beat(self, name: str = "beat", **env: str) -> CeleryProcess:
        beat_env = dict(self.env, **env)
        beat = start_beat(beat_env, self._log(name), self.workdir / f"{name}-schedule")
        self.beats[name] = beat
        return beat

    def logs(self) -> list[Path]:
        return sorted(self.workdir.glob("*.log"))

    def exited(self) -> set[Path]:
        """Logs of the current workers and beats whose process has ended (none was stopped
        by the test yet: `kill_worker` retires the process it kills)."""
        current = [*self.workers.values(), *self.beats.values()]
        return {process.log_path for process in current if process.proc.poll() is not None}

    def check(
        self,
        fault: str,
        recorded: dict[uuid.UUID, str],
        *,
        injections: int,
        started: float,
        by_ticker: dict[str, list[uuid.UUID]] | None = None,
    ) -> Result:
        """`check` of `recorded` on this stack's database and logs, `started` at that
        `time.monotonic()`."""
        return check(
            fault,
            self.db,
            recorded,
            self.logs(),
            injections=injections,
            seconds=time.monotonic() - started,
            by_ticker=by_ticker,
        )

    def close(self) -> None:
        for process in [*self.beats.values(), *self.workers.values()]:
            with contextlib.suppress(Exception):
                process.stop(timeout=15)
        for process in self.retired:
            with contextlib.suppress(Exception):
                process.kill()


# -- load -----------------------------------------------------------------------------------------


@dataclass(eq=False)
class LoadGenerator:
    """Publishes `rate` signals/s for `duration` s through record + outbox + publish, in a
    daemon thread of its own (`start`, `join`, `is_alive`).

    A record that fails (database away) is retried with back-off, the same signal (same id),
    until it commits: `recorded` holds every signal that committed, which is what the bus owes.
    `duplicate_every`: every n-th signal is published a second time (a publisher retry).
    `batch`: signals recorded per transaction (a generator run records all its signals at once).
    """

    db: Database
    broker_url: str
    _: KW_ONLY
    rate: float
    duration: float
    run: str
    duplicate_every: int = 0
    seed: int = 1
    tickers: list[str] = field(default_factory=lambda: TICKERS)
    batch: int = 1
    recorded: dict[uuid.UUID, str] = field(init=False, default_factory=dict)
    publish_failures: int = field(init=False, default=0)
    record_failures: int = field(init=False, default=0)
    duplicates_sent: int = field(init=False, default=0)
    stop_event: threading.Event = field(init=False, default_factory=threading.Event)
    error: BaseException | None = field(init=False, default=None)
    _burst: int = field(init=False, default=0)
    _burst_lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._main, name=f"load-{self.run}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _main(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test, not swallowed
            self.error = exc

    def burst(self, count: int) -> None:
        """Publish the next `count` signals at once (the average rate is kept)."""
        with self._burst_lock:
            self._burst += count

    def _take_burst(self) -> int:
        with self._burst_lock:
            count, self._burst = self._burst, 0
        return count

    def _record(self, signals: list[Signal]) -> list[Signal]:
        delay = 0.2
        while True:
            try:
                with self.db.session() as session:
                    return record_signals(session, signals)
            except SQLAlchemyError:
                self.record_failures += 1
                if self.stop_event.wait(delay):
                    # Stopped while the database is away: the signal was never recorded, so
                    # it is not owed; try once more so a just-returned database still takes it.
                    with self.db.session() as session:
                        return record_signals(session, signals)
                delay = min(delay * 2, 2.0)

    def _run(self) -> None:
        rng = random.Random(self.seed)
        batch = max(1, self.batch)
        publisher = KombuPublisher(self.broker_url)
        started = time.monotonic()
        number = 0
        try:
            while not self.stop_event.is_set():
                due = started + number / self.rate
                if due - started >= self.duration:
                    break
                count = self._take_burst() or batch
                pause = due - time.monotonic()
                if count == batch and pause > 0 and self.stop_event.wait(pause):
                    break
                picked = [(number + k, rng.choice(self.tickers)) for k in range(count)]
                signals = [make_signal(n, ticker, self.run) for n, ticker in picked]
                new = self._record(signals)
                for item in new:
                    self.recorded[item.signal_id] = item.tickers[0]
                try:
                    outcome = publish_recorded(self.db, publisher, new)
                    self.publish_failures += outcome.failed
                except SQLAlchemyError:
                    # Published but not marked (database away): the sweep republishes it.
                    self.publish_failures += 1
                for n, signal in zip([n for n, _ in picked], signals, strict=True):
                    if self.duplicate_every and n % self.duplicate_every == 0:
                        with contextlib.suppress(Exception):
                            publisher.publish(signal.to_json(), signal.routing_key)
                            self.duplicates_sent += 1
                number += count
        finally:
            publisher.close()


# -- hostile messages -----------------------------------------------------------------------------


def pickle_marker_payload(marker: Path) -> bytes:
    """A pickle that creates `marker` if anything ever unpickles it (never built by pickle)."""
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


def inject_hostile(broker_url: str, marker: Path) -> list[str]:
    """Publish malformed and hostile messages; return one label per message sent.

    On the exchange (→ the intake queue): invalid JSON, wrong schema, unknown type, a pickle,
    a 2 MB body. On the Celery queues: a pickled protocol-2 task message for `signals.dispatch`
    and for `pipelines.execute`, an unknown task name, and a headerless pickle.
    """
    evil = pickle_marker_payload(marker)
    sent: list[str] = []
    good = make_signal(0, "F001", f"hostile-{uuid.uuid4().hex}")
    wrong_schema = json.loads(good.to_json())
    wrong_schema["tickers"] = ["f001"]
    unknown_type = json.loads(good.to_json())
    unknown_type["signal_type"] = "telepathy"
    with Connection(broker_url) as connection:
        producer = connection.Producer()
        on_exchange = {
            "exchange": SIGNAL_EXCHANGE,
            "declare": [SIGNAL_EXCHANGE, DISPATCH_INTAKE_QUEUE],
            "retry": True,
        }
        for label, body, content_type in [
            ("exchange:invalid-json", b"{not json", "application/json"),
            ("exchange:wrong-schema", json.dumps(wrong_schema).encode(), "application/json"),
            ("exchange:unknown-type", json.dumps(unknown_type).encode(), "application/json"),
            ("exchange:pickle", evil, "application/x-python-serialize"),
            ("exchange:oversize", b'{"pad": "' + b"x" * 2_000_000 + b'"}', "application/json"),
        ]:
            producer.publish(
                body,
                routing_key="signal.mock.F001",
                content_type=content_type,
                content_encoding="binary" if "python" in content_type else "utf-8",
                **on_exchange,
            )
            sent.append(label)
        for label, queue, task, body, content_type in [
            (
                "queue:dispatch-pickle",
                "dispatch",
                "signals.dispatch",
                evil,
                "application/x-python-serialize",
            ),
            (
                "queue:pipelines-pickle",
                "pipelines",
                "pipelines.execute",
                evil,
                "application/x-python-serialize",
            ),
            (
                "queue:unknown-task",
                "dispatch",
                "os.system",
                b'[["id"], {}, {}]',
                "application/json",
            ),
            ("queue:headerless-pickle", "celery", None, evil, "application/x-python-serialize"),
        ]:
            headers = (
                {
                    "task": task,
                    "id": str(uuid.uuid4()),
                    "lang": "py",
                    "argsrepr": "()",
                    "kwargsrepr": "{}",
                }
                if task
                else {}
            )
            producer.publish(
                body,
                exchange="",
                routing_key=queue,
                headers=headers,
                content_type=content_type,
                content_encoding="binary" if "python" in content_type else "utf-8",
                retry=True,
            )
            sent.append(label)
    return sent


# -- checking -------------------------------------------------------------------------------------


@dataclass
class Result:
    fault: str
    injections: int
    published: int
    expected: int
    executed: int
    signals_lost: int
    executions_lost: int
    duplicated: int
    restarted: int = 0
    seconds: float = 0.0
    notes: str = ""
    #: Worker and beat processes that died on their own (a kill by the injector is not one).
    crashed: int = 0

    def row(self) -> list[str]:
        return [
            self.fault,
            str(self.injections),
            str(self.published),
            str(self.expected),
            str(self.executed),
            f"{self.signals_lost}/{self.executions_lost}",
            str(self.duplicated),
            str(self.restarted),
            str(self.crashed),
            f"{self.seconds:.0f}",
        ]


HEADER = [
    "fault",
    "injections",
    "signals published",
    "executions expected",
    "executed",
    "lost (signals/executions)",
    "duplicated",
    "restarted",
    "crashed",
    "s",
]


def table(results: list[Result]) -> str:
    rows = [HEADER, *(r.row() for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [line]
    for index, row in enumerate(rows):
        out.append("|".join(f" {cell:<{widths[i]}} " for i, cell in enumerate(row)))
        if index == 0:
            out.append(line)
    out.append(line)
    return "\n".join(out)


def completed_runs(logs: list[Path]) -> Counter[int]:
    """Executor runs that reached their end, per execution id (`pipeline_executed` events)."""
    runs: Counter[int] = Counter()
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if '"pipeline_executed"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "pipeline_executed":
                runs[int(event["execution_id"])] += 1
    return runs


def crashed_logs(logs: list[Path]) -> set[Path]:
    """Logs of processes that stopped on an error of their own ("Unrecoverable error")."""
    return {path for path in logs if "Unrecoverable error" in path.read_text(errors="replace")}


def repairs(logs: list[Path]) -> Counter[str]:
    """What the repair sweep re-sent (`bus_repaired` events): redispatched, reenqueued."""
    total: Counter[str] = Counter()
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if '"bus_repaired"' in line:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    total["redispatched"] += int(event.get("redispatched", 0))
                    total["reenqueued"] += int(event.get("reenqueued", 0))
    return total


def expected_pairs(
    recorded: dict[uuid.UUID, str],
    by_ticker: dict[str, list[uuid.UUID]] | None = None,
) -> set[tuple[uuid.UUID, uuid.UUID]]:
    by_ticker = by_ticker or pipelines_by_ticker()
    return {(pid, sid) for sid, ticker in recorded.items() for pid in by_ticker[ticker]}


def _state(db: Database, signal_ids: set[uuid.UUID]) -> tuple[dict[str, int], int]:
    with db.session() as session:
        statuses = dict(
            session.execute(  # type: ignore[arg-type]
                select(Execution.status, func.count()).group_by(Execution.status)
            ).all()
        )
        pending = sum(
            1
            for (sid, status) in session.execute(
                select(SignalRecord.signal_id, SignalRecord.dispatch_status)
            )
            if sid in signal_ids and status == "pending"
        )
    return statuses, pending


def settle(
    db: Database,
    recorded: dict[uuid.UUID, str],
    *,
    extra_expected: int = 0,
    timeout: float,
    expected: int | None = None,
) -> bool:
    """Wait until every recorded signal is dispatched and every execution finished, with the
    expected count reached. False on timeout (the check then reports what is missing)."""
    want = (len(expected_pairs(recorded)) if expected is None else expected) + extra_expected
    ids = set(recorded)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(SQLAlchemyError):
            statuses, pending = _state(db, ids)
            unfinished = sum(statuses.get(s, 0) for s in ("claimed", "enqueued", "running"))
            if pending == 0 and unfinished == 0 and statuses.get("succeeded", 0) >= want:
                time.sleep(2.0)  # a straggling duplicate would land now
                return True
        time.sleep(0.5)
    return False


def execution_rows(
    session: Session, *where: ColumnElement[bool]
) -> Sequence[Row[int, uuid.UUID, uuid.UUID | None, str, int]]:
    """Id, pipeline, signal, status and attempts of every execution (of those that match
    `where`)."""
    return session.execute(
        select(
            Execution.id,
            Execution.pipeline_id,
            Execution.signal_id,
            Execution.status,
            Execution.attempts,
        ).where(*where)
    ).all()


def check(
    fault: str,
    db: Database,
    recorded: dict[uuid.UUID, str],
    logs: list[Path],
    *,
    injections: int,
    seconds: float,
    notes: str = "",
    by_ticker: dict[str, list[uuid.UUID]] | None = None,
    exited: set[Path] | None = None,
) -> Result:
    """Signals lost, executions lost and duplicated for the load generator's signals; and the
    processes that died on their own: an "Unrecoverable error" in their log, or in `exited`
    (logs of processes found ended, `Stack.exited`)."""
    expected = expected_pairs(recorded, by_ticker)
    with db.session() as session:
        rows = execution_rows(session, Execution.signal_id.is_not(None))
        signal_rows = dict(
            session.execute(  # type: ignore[arg-type]
                select(SignalRecord.signal_id, SignalRecord.dispatch_status)
            ).all()
        )
    ours = [r for r in rows if r.signal_id in recorded]
    per_pair = Counter((r.pipeline_id, r.signal_id) for r in ours)
    succeeded = {(r.pipeline_id, r.signal_id) for r in ours if r.status == "succeeded"}
    runs = completed_runs(logs)
    our_ids = {r.id for r in ours}
    duplicated = sum(n - 1 for n in per_pair.values() if n > 1) + sum(
        n - 1 for eid, n in runs.items() if eid in our_ids and n > 1
    )
    unexpected = set(per_pair) - expected
    signals_lost = sum(
        1 for sid in recorded if signal_rows.get(sid) not in ("dispatched", "unmatched")
    )
    crashed = crashed_logs(logs) | (exited or set())
    if crashed:
        notes += f"died on their own: {sorted(path.name for path in crashed)}. "
    result = Result(
        fault=fault,
        injections=injections,
        published=len(recorded),
        expected=len(expected),
        executed=len(succeeded & expected),
        signals_lost=signals_lost,
        executions_lost=len(expected - succeeded),
        duplicated=duplicated + len(unexpected),
        restarted=sum(1 for r in ours if r.attempts > 1),
        seconds=seconds,
        notes=notes,
        crashed=len(crashed),
    )
    return result


def dead_letters(db: Database) -> list[DeadLetter]:
    with db.session() as session:
        return list(session.execute(select(DeadLetter).order_by(DeadLetter.id)).scalars())


def wait_dead_letters(db: Database, count: int, timeout: float = 30) -> list[DeadLetter]:
    """The dead letters, once there are at least `count` of them."""
    return wait_until(
        lambda: found if len(found := dead_letters(db)) >= count else [],
        timeout=timeout,
        interval=0.3,
        message=f"{count} dead letters",
        detail=lambda: [x.reason for x in dead_letters(db)],
    )


# -- results shared with the session summary -------------------------------------------------------

RESULTS: list[Result] = []


def record_result(result: Result) -> None:
    RESULTS.append(result)
    path = os.environ.get("FAULTS_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result.__dict__) + "\n")


def every(
    interval: tuple[float, float],
    until: Callable[[], bool],
    action: Callable[[], None],
    rng: random.Random,
) -> int:
    """Call `action` at random moments `interval` apart until `until()`; return how often."""
    count = 0
    while True:
        pause = rng.uniform(*interval)
        deadline = time.monotonic() + pause
        while time.monotonic() < deadline:
            if until():
                return count
            time.sleep(0.1)
        if until():
            return count
        action()
        count += 1
