"""The embedded default: the whole service in one command, offline when nothing is configured.

`signalgen dev` runs two Celery workers (delivery, and generation on its own queue), beat (and, on
request, the HTTP API) as child processes. With BROKER_URL / DATABASE_URL set it uses them. With
none, it serves the Redis protocol itself (fakeredis's TCP server, in this process, on a free local
port), uses the SQLite default, creates the schema and loads the bundled sample bars, so signals
flow within seconds without a network.
SIGINT (Ctrl-C), SIGTERM or SIGHUP (the terminal closed) stops every child and waits for it. If
the parent dies without doing so (SIGKILL, a crash), each child gets SIGTERM from the kernel
(parent-death signal) and a reaper process stops what is left and removes the temporary
directory (`signalgen.interfaces.dev_reaper`): no orphans either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from signalgen.interfaces.dev_reaper import LAUNCHER
from signalgen.logs import log_event, redact

if TYPE_CHECKING:
    from signalgen.settings import Settings

logger = logging.getLogger("signalgen.interfaces.dev")

#: The mock generator's interval under `signalgen dev` unless MOCK_GENERATOR_INTERVAL_SECONDS
#: says otherwise: frequent enough that a fresh checkout shows signals at once.
DEV_MOCK_INTERVAL_SECONDS = "15"
#: Loopback webhook receivers allowed under `signalgen dev` (unless WEBHOOK_ALLOW_NETWORKS is set).
DEV_WEBHOOK_ALLOW_NETWORKS = "127.0.0.1/32,::1/128"
#: How long a child gets to finish its current task after SIGTERM before it is killed.
STOP_TIMEOUT_SECONDS = 20.0


class EmbeddedRedis:
    """fakeredis's Redis-protocol TCP server on 127.0.0.1, served from a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from fakeredis import TcpFakeServer

        self.server = TcpFakeServer((host, port))
        self.host = host
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="embedded-redis",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


class Reaper:
    """The process that stops the children if this one dies without stopping them itself
    (`signalgen.interfaces.dev_reaper`): told each child's process group through a pipe; closing the
    pipe without `done` (this process gone, however) makes it stop them and remove `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "signalgen.interfaces.dev_reaper", str(workdir)],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a terminal's signals must not reach it
        )

    def _send(self, line: str) -> None:
        stdin = self.process.stdin
        if stdin is None or stdin.closed:
            return
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            stdin.write(line.encode() + b"\n")
            stdin.flush()

    def watch(self, pgid: int) -> None:
        self._send(f"pgid {pgid}")

    def release(self) -> None:
        """Every child stopped by us: the reaper exits without touching anything."""
        self._send("done")
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: Mapping[str, str], reaper: Reaper | None = None) -> None:
        # Own session: a terminal's Ctrl-C reaches only us, and we stop children in order.
        # Through the launcher: the kernel sends the child SIGTERM if we die (PR_SET_PDEATHSIG).
        argv = [sys.executable, "-c", LAUNCHER, str(os.getpid()), *self.argv]
        self.process = subprocess.Popen(argv, env=dict(env), start_new_session=True)  # noqa: S603
        if reaper is not None:
            reaper.watch(self.process.pid)  # its own session: the group id is its pid
        log_event(logger, "dev_child_started", child=self.name, pid=self.process.pid)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log_event(
                logger, "dev_child_killed", logging.WARNING, child=self.name, pid=self.process.pid
            )
        # Still running (not reaped, so its group id is still its own): kill the whole group,
        # a prefork worker's pool children included.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait(10)


@dataclass
class DevOptions:
    concurrency: int = 2
    beat: bool = True
    api_port: int | None = None
    log_level: str | None = None


@dataclass
class DevService:
    """The children and the embedded broker of one `signalgen dev` run."""

    options: DevOptions
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    embedded: EmbeddedRedis | None = None
    children: list[Child] = field(default_factory=list)
    workdir: Path | None = None
    reaper: Reaper | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _stopped: bool = False

    def prepare(self) -> None:
        """Choose broker and database, create the schema, load sample bars, check the config.

        Raises ConfigError (file and field) before any child starts.
        """
        from signalgen.settings import Settings
        from tasks.schedules import build_beat_schedule

        env = self.env
        if not env.get("BROKER_URL"):
            self.embedded = EmbeddedRedis().start()
            env["BROKER_URL"] = self.embedded.url
            env.setdefault("REDIS_URL", self.embedded.url)
        env.setdefault("MOCK_GENERATOR_INTERVAL_SECONDS", DEV_MOCK_INTERVAL_SECONDS)
        # The mock generator ships disabled; dev runs it (pipelines still opt in to its signals).
        env.setdefault("MOCK_GENERATOR_ENABLED", "1")
        env["SIGNALGEN_DEV"] = "1"
        # Local webhook receivers are the norm on a workstation; production allows none.
        env.setdefault("WEBHOOK_ALLOW_NETWORKS", DEV_WEBHOOK_ALLOW_NETWORKS)
        if self.options.log_level:
            env["LOG_LEVEL"] = self.options.log_level
        env["PYTHONUNBUFFERED"] = "1"
        settings = Settings(
            **{
                k: v
                for k, v in env.items()  # type: ignore[arg-type]
                if k in _SETTINGS_VARIABLES
            }
        )
        env["DATABASE_URL"] = settings.database_url
        build_beat_schedule(settings)  # bad configuration stops here, naming file and field
        self._prepare_database(settings.database_url, settings)
        self.workdir = self._make_workdir()
        log_event(
            logger,
            "dev_prepared",
            broker=redact(env["BROKER_URL"]),
            embedded_broker=self.embedded is not None,
            database=redact(settings.database_url),
            mock_interval_seconds=env["MOCK_GENERATOR_INTERVAL_SECONDS"],
        )

    def _make_workdir(self) -> Path:
        """The temporary directory (beat's schedule file), with the reaper that removes it and
        stops the children should this process die without doing so."""
        workdir = Path(tempfile.mkdtemp(prefix="signalgen-dev-"))
        self.reaper = Reaper(workdir)
        # The children's TMPDIR (multiprocessing's pymp-* directories...): inside, so that
        # whatever they leave goes with it.
        (workdir / "tmp").mkdir()
        return workdir

    def _prepare_database(self, url: str, settings: Settings) -> None:
        from signalgen.config import enabled_generators
        from signalgen.storage import Database
        from signalgen.storage.engine import ensure_schema

        database = Database(url)
        try:
            ensure_schema(database)
            try:
                from signalgen.marketdata import BarStore
                from signalgen.marketdata.sample import load_aligned_sample_bars
            except ImportError:  # market data not installed in this build: mock signals only
                return
            # Sample history re-dated to end today, its windows chosen so each enabled generator
            # has an event to show; never when the store holds real market data.
            generators = [spec.generator for spec in enabled_generators(settings).values()]
            loaded = load_aligned_sample_bars(BarStore(database), generators)
            if loaded:
                log_event(
                    logger,
                    "sample_bars_loaded",
                    tickers=[sample.ticker for sample in loaded],
                    bars=sum(sample.bars for sample in loaded),
                    last_day=max(sample.last_day for sample in loaded).isoformat(),
                    events={sample.ticker: list(sample.events) for sample in loaded},
                )
        finally:
            database.dispose()

    def plan(self) -> list[Child]:
        from signalgen.bus.topology import (
            DELIVERY_WORKER_QUEUES,
            GENERATION_WORKER_QUEUES,
            queues_option,
        )

        python = sys.executable
        assert self.workdir is not None
        # Two workers, as in production: generation (which may wait on market data) on its own
        # pool, so it never delays dispatch and executions. One generation process is plenty
        # for the dev schedule and keeps the footprint to one more pair of processes.
        workers = (
            ("worker", "dev@%h", DELIVERY_WORKER_QUEUES, self.options.concurrency),
            ("generator", "dev-generate@%h", GENERATION_WORKER_QUEUES, 1),
        )
        children = [
            Child(
                name,
                [
                    python,
                    "-m",
                    "tasks.worker",
                    "--loglevel=INFO",
                    f"--concurrency={concurrency}",
                    "-n",
                    node,
                    queues_option(queues),
                    "--without-gossip",
                    "--without-mingle",
                ],
            )
            for name, node, queues, concurrency in workers
        ]
        if self.options.beat:
            children.append(
                Child(
                    "beat",
                    [
                        python,
                        "-m",
                        "celery",
                        "-A",
                        "tasks",
                        "beat",
                        "--loglevel=INFO",
                        f"--schedule={self.workdir / 'beat-schedule'}",
                    ],
                )
            )
        if self.options.api_port is not None:
            children.append(
                Child(
                    "api",
                    [
                        python,
                        "-c",
                        "from signalgen.interfaces.cli import run; run()",
                        "api",
                        "--port",
                        str(self.options.api_port),
                    ],
                )
            )
        return children

    def request_stop(self, signum: int, _frame: FrameType | None = None) -> None:
        log_event(logger, "dev_stopping", signal=signal.Signals(signum).name)
        self._stop.set()

    def run(self) -> int:
        """Start the children and supervise them until a signal, or until one of them exits."""
        self.children = self.plan()
        exit_code = 0
        try:
            env = dict(self.env)
            if self.workdir is not None:
                env["TMPDIR"] = str(self.workdir / "tmp")
            for child in self.children:
                child.start(env, self.reaper)
            while not self._stop.wait(0.5):
                ended = [c for c in self.children if not c.running()]
                if ended:
                    code = ended[0].process.returncode if ended[0].process else 1
                    log_event(
                        logger,
                        "dev_child_exited",
                        logging.ERROR,
                        child=ended[0].name,
                        returncode=code,
                    )
                    exit_code = code or 1
                    break
        finally:
            self.shutdown()
        return exit_code

    def shutdown(self) -> None:
        """Stop every child (SIGTERM, SIGKILL after a grace period), then the broker. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for child in reversed(self.children):  # beat first: no new ticks while the worker drains
            child.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for child in reversed(self.children):
            child.wait_or_kill(deadline)
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        if self.reaper is not None:
            self.reaper.release()
            self.reaper = None
        log_event(logger, "dev_stopped")


_SETTINGS_VARIABLES = {
    "BROKER_URL",
    "DATABASE_URL",
    "REDIS_URL",
    "FINNHUB_API_KEY",
    "FINNHUB_BASE_URL",
    "WATCHLIST_CONFIG_PATH",
    "GENERATORS_CONFIG_PATH",
    "MOCK_GENERATOR_INTERVAL_SECONDS",
    "GOLDEN_CROSS_CHECK_INTERVAL_SECONDS",
    "MOCK_GENERATOR_ENABLED",
    "SIGNALGEN_DEV",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "WEBHOOK_ALLOW_NETWORKS",
}


def run_dev(options: DevOptions) -> int:
    """`signalgen dev`: prepare, start, supervise; returns the exit code."""
    from signalgen.logs import configure_logging
    from signalgen.settings import get_settings

    settings = get_settings()
    configure_logging(options.log_level or settings.log_level, settings.log_format)
    service = DevService(options)
    previous = {
        s: signal.signal(s, service.request_stop)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        service.prepare()
        if service._stop.is_set():
            return 0
        return service.run()
    finally:
        service.shutdown()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
