"""`signalgen dev` with nothing configured: offline signals within 60 s, clean stop on SIGINT."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection
from datetime import date, timedelta
from pathlib import Path

import pytest

from signalgen.marketdata.sample import latest_session, market_today
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def shows_every_generator(signal_types: Collection[str]) -> bool:
    """A cross of either kind (the sample windows hold both), a volatility breakout and a
    price-level break."""
    kinds = set(signal_types)
    return {"volatility_breakout", "price_level"} <= kinds and bool(
        {"golden_cross", "death_cross"} & kinds
    )


CONFIG_VARIABLES = (
    "BROKER_URL",
    "DATABASE_URL",
    "REDIS_URL",
    "FINNHUB_API_KEY",
    "MOCK_GENERATOR_INTERVAL_SECONDS",
    "GOLDEN_CROSS_CHECK_INTERVAL_SECONDS",
    "GENERATORS_CONFIG_PATH",
    "WATCHLIST_CONFIG_PATH",
    "CELERY_BROKER_URL",
)


def descendants(pid: int) -> set[int]:
    """Every live process whose ancestry leads to `pid` (from /proc, no psutil)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def rss_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
    )


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_dev_runs_offline_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    env["PYTHONUNBUFFERED"] = "1"
    # A fresh checkout's database: the default file lives in the checkout and is shared by every
    # run of the day, where the sample crosses are already recorded (the same event, not new).
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'signalgen.storage'}"
    log_path = tmp_path / "dev.log"
    with log_path.open("wb") as log:
        # Run from an empty directory: no .env, nothing configured, as in a fresh checkout.
        proc = subprocess.Popen(
            [sys.executable, "-c", "from signalgen.interfaces.cli import run; run()", "dev"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    children: set[int] = set()
    try:
        started = time.monotonic()
        first: float | None = None
        by_type: dict[str, dict[str, object]] = {}

        def every_generator_emitted() -> bool:
            nonlocal first
            assert proc.poll() is None, log_path.read_text()[-4000:]
            children.update(descendants(proc.pid))
            for line in log_path.read_text(errors="replace").splitlines():
                if line.startswith("{") and '"signal_emitted"' in line:
                    event = json.loads(line)
                    first = first or time.monotonic() - started
                    by_type.setdefault(str(event["signal_type"]), event)
            return shows_every_generator(by_type)

        # Every bar generator shows an event from the bundled history, re-dated to end today.
        wait_until(
            every_generator_emitted,
            timeout=60,
            interval=0.5,
            message="a signal_emitted from every generator",
            detail=lambda: f"signal types: {sorted(by_type)}\n{log_path.read_text()[-4000:]}",
        )
        assert first is not None, f"no signal_emitted in 60 s:\n{log_path.read_text()[-4000:]}"
        print(f"first signal_emitted {first:.1f}s after `signalgen dev`")
        print(f"golden/death cross, volatility, price level: {time.monotonic() - started:.1f}s")
        assert shows_every_generator(by_type), (
            f"signal types in 60 s: {sorted(by_type)}\n{log_path.read_text()[-4000:]}"
        )
        crosses = {"golden_cross", "death_cross"} & set(by_type)
        for kind in ("volatility_breakout", "price_level", *crosses):
            assert by_type[kind].get("sample_data") is True, by_type[kind]
        emitted = next(iter(by_type.values()))
        [loaded] = [
            json.loads(line)
            for line in log_path.read_text().splitlines()
            if line.startswith('{"event": "sample_bars_loaded"')
        ]
        # Aligned on the latest session on or before today at the exchange (holidays skipped).
        last_day = date.fromisoformat(loaded["last_day"])
        assert latest_session(market_today()) - timedelta(days=4) <= last_day <= market_today()
        assert last_day.weekday() < 5
        assert set(emitted) >= {
            "signal_id",
            "signal_type",
            "tickers",
            "timestamp",
            "source",
            "routing_key",
        }
        [prepared] = [
            json.loads(line)
            for line in log_path.read_text().splitlines()
            if line.startswith('{"event": "dev_prepared"')
        ]
        assert prepared["embedded_broker"] is True
        assert prepared["broker"].startswith("redis://127.0.0.1:")
        assert prepared["database"].startswith("sqlite:///")  # SQLite, as by default
        children |= descendants(proc.pid)
        assert len(children) >= 3  # two workers (+ their pools) and beat
        started_children = {
            json.loads(line)["child"]
            for line in log_path.read_text().splitlines()
            if line.startswith('{"event": "dev_child_started"')
        }
        assert started_children == {"worker", "generator", "beat"}
        # Generation on a worker of its own, delivery on the other: as in production.
        queues = {  # pool children share their worker's command line
            argument.split("=", 1)[1]
            for pid in children
            for argument in cmdline(pid)
            if argument.startswith("--queues=")
        }
        assert queues == {"celery,signals,dispatch,pipelines", "generate"}, queues
        print(
            f"memory of every child process: {sum(rss_kb(pid) for pid in children) / 1024:.0f} MB"
        )

        proc.send_signal(signal.SIGINT)
        assert proc.wait(40) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:  # a failed assertion: leave nothing behind
            children |= descendants(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            for pid in children:  # each child runs in a session of its own
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: not any(alive(pid) for pid in children),
        timeout=5,
        message="children stopped",
        detail=lambda: [pid for pid in children if alive(pid)],
    )
    orphans = [pid for pid in children if alive(pid)]
    assert not orphans, f"children left running: {orphans}"
    assert '"dev_stopped"' in log_path.read_text()
