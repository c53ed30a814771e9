"""`signalgen dev` leaves nothing behind whatever stops it: SIGKILL of the parent (a crash, an
OOM kill) and SIGHUP (the terminal closed) both end every child and remove the temp dirs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_dev import CONFIG_VARIABLES, alive, descendants
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

#: After the parent is gone, how long the children may take to go too.
ORPHAN_BOUND_SECONDS = 30.0


@dataclass
class DevRun:
    proc: subprocess.Popen[bytes]
    log: Path
    tmp: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, object]]:
        return [
            json.loads(line)
            for line in self.text().splitlines()
            if line.startswith("{") and f'"event": "{name}"' in line
        ]


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevRun]:
    """`signalgen dev` (offline defaults) with its own TMPDIR, running until both workers are
    ready; afterwards anything still alive is killed (a failed test must leave nothing)."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env.update(PYTHONUNBUFFERED="1", TMPDIR=str(tmp), LOG_FORMAT="json")
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from signalgen.interfaces.cli import run; run()", "dev"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run = DevRun(proc, log, tmp)
    seen: set[int] = set()
    try:
        wait_until(
            lambda: run.text().count(" ready.") >= 2,
            timeout=60,
            message="both workers ready",
            detail=lambda: "\n" + run.text()[-4000:],
        )
        seen |= descendants(proc.pid)
        yield run
    finally:
        seen |= descendants(proc.pid)
        for pid in [proc.pid, *seen]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


def assert_nothing_left(run: DevRun, children: set[int]) -> None:
    wait_until(
        lambda: not any(alive(pid) for pid in children) and not any(run.tmp.iterdir()),
        timeout=ORPHAN_BOUND_SECONDS,
        message="children stopped and temp dirs removed",
        detail=lambda: ([pid for pid in children if alive(pid)], list(run.tmp.iterdir())),
    )
    left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in children if alive(pid)}
    assert not left, f"children still running {ORPHAN_BOUND_SECONDS} s after: {left}"
    assert not list(run.tmp.iterdir()), f"temp dirs left: {list(run.tmp.iterdir())}"


def test_sigkill_of_the_parent_leaves_no_child_and_no_temp_dir(dev: DevRun) -> None:
    children = descendants(dev.proc.pid)
    started = {event["child"] for event in dev.events("dev_child_started")}
    assert started == {"worker", "generator", "beat"}
    assert len(children) >= 5  # two workers and their pools, beat, the reaper
    assert any(dev.tmp.iterdir())  # the run's temp dir (beat's schedule, the children's TMPDIR)

    killed_at = time.monotonic()
    dev.proc.kill()  # SIGKILL: no handler runs, nothing is cleaned up by the parent itself
    dev.proc.wait(10)
    assert_nothing_left(dev, children)
    print(f"every child gone {time.monotonic() - killed_at:.1f} s after SIGKILL of the parent")


def test_sighup_stops_everything_cleanly(dev: DevRun) -> None:
    children = descendants(dev.proc.pid)
    dev.proc.send_signal(signal.SIGHUP)  # the terminal closed
    assert dev.proc.wait(40) == 0, dev.text()[-3000:]
    assert dev.events("dev_stopping")[-1]["signal"] == "SIGHUP"
    assert dev.events("dev_stopped")
    assert_nothing_left(dev, children)
