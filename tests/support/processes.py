"""Real Celery worker and beat processes for integration tests (never eager mode)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def service_env(**overrides: str) -> dict[str, str]:
    """The environment of a child process: ours, minus CI noise, plus `overrides`."""
    env = dict(os.environ)
    env.setdefault("LOG_LEVEL", "INFO")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


#: Variables of the developer's or CI's environment that would change what a bus test's
#: workers generate: a test that wants them sets them itself.
GENERATION_VARIABLES = (
    "MOCK_GENERATOR_INTERVAL_SECONDS",
    "GOLDEN_CROSS_CHECK_INTERVAL_SECONDS",
    "FINNHUB_API_KEY",
)


def bus_env(
    tmp_path: Path,
    *,
    redis_url: str,
    database_url: str,
    tickers: list[str],
    generators: dict[str, object] | None = None,
    drop: tuple[str, ...] = (),
    **overrides: str,
) -> dict[str, str]:
    """A worker's environment on Redis and `database_url`, with its generators and watchlist
    written under `tmp_path` (no generator unless given), the generation variables of this
    environment and `drop` removed, and `overrides` set."""
    (tmp_path / "generators.json").write_text(json.dumps({"generators": generators or {}}))
    (tmp_path / "watchlist.json").write_text(json.dumps({"tickers": tickers}))
    env = service_env(
        BROKER_URL=redis_url,
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        GENERATORS_CONFIG_PATH=str(tmp_path / "generators.json"),
        WATCHLIST_CONFIG_PATH=str(tmp_path / "watchlist.json"),
        **overrides,
    )
    for name in (*GENERATION_VARIABLES, *drop):
        env.pop(name, None)
    return env


class CeleryProcess:
    """A `celery -A tasks ...` child. Output goes to `log_path`; `stop()` ends it cleanly."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", *args],
            cwd=PROJECT_ROOT,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"celery {self.args} exited ({self.proc.returncode}):\n" + self.output()[-4000:]
                )
            time.sleep(0.2)
        raise TimeoutError(
            f"{text!r} not seen in {timeout}s from celery {self.args}:\n" + self.output()[-4000:]
        )

    def kill(self) -> None:
        """SIGKILL the whole process group (main process and pool children)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def start_worker(
    env: Mapping[str, str],
    log_path: Path,
    *,
    name: str = "w1",
    concurrency: int = 2,
    queues: str | None = None,
    wait: bool = True,
    extra: list[str] | None = None,
) -> CeleryProcess:
    args = [
        "worker",
        "--loglevel=INFO",
        f"--concurrency={concurrency}",
        "-n",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
        *(extra or []),
    ]
    if queues:
        args.append(f"--queues={queues}")
    worker = CeleryProcess(args, env, log_path)
    if wait:
        worker.wait_for("ready.", timeout=60)
    return worker


def start_beat(env: Mapping[str, str], log_path: Path, schedule_path: Path) -> CeleryProcess:
    return CeleryProcess(["beat", "--loglevel=INFO", f"--schedule={schedule_path}"], env, log_path)
