"""Beat sends each slot once: a beat restarted within a slot (after SIGKILL, its schedule file
lost, so nothing local records the send) and a second beat started in it send nothing more for
that slot; the next slot is sent once. Real `celery -A tasks beat` processes on Redis, no
worker: the sends are the task messages waiting in their queues, each `signals.generate`
carrying the moment beat sent it (`slot_time`), from which its slot follows; and, for every
entry, beat's own "Sending due task" lines, each stamped with the time it was sent.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import CeleryProcess, service_env, start_beat
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

INTERVAL = 20  # seconds: the mock generator's slot (long enough for three beats to start in it)
#: Every entry's slot length (build_beat_schedule): generate, fire_periodic, outbox sweep, repair.
INTERVALS = {
    "generate:mock_generator": INTERVAL,
    "pipelines-fire-periodic": 10,
    "outbox-sweep": 30,
    "bus-repair": 60,
}


def generate_sends(client: Any) -> Counter[int]:
    """Slot number -> `signals.generate` messages sent for it (read from the `generate` queue)."""
    slots: Counter[int] = Counter()
    for raw in client.lrange("generate", 0, -1):
        message = json.loads(raw)
        assert message["headers"]["task"] == "signals.generate"
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        sent_at = datetime.fromisoformat(kwargs["slot_time"])
        slots[math.floor(sent_at.timestamp() / INTERVAL)] += 1
    return slots


def logged_sends(*processes: CeleryProcess) -> Counter[tuple[str, int]]:
    """(entry, slot number) -> sends, from the beats' own log lines and their timestamps."""
    sends: Counter[tuple[str, int]] = Counter()
    for process in processes:
        for line in process.output().splitlines():
            if line.startswith("{") and "Sending due task " in line:
                event = json.loads(line)
                entry = event["event"].split("Sending due task ", 1)[1].split(" ", 1)[0]
                sent_at = datetime.fromisoformat(event["ts"]).timestamp()
                sends[entry, math.floor(sent_at / INTERVALS[entry])] += 1
    return sends


def wait_for_event(process: CeleryProcess, event: str, entry: str, timeout: float) -> None:
    wait_until(
        lambda: any(
            line.startswith("{") and f'"{event}"' in line and json.loads(line).get("entry") == entry
            for line in process.output().splitlines()
        ),
        timeout=timeout,
        interval=0.1,
        message=f"{event} for {entry}",
        detail=lambda: "\n" + process.output()[-3000:],
    )


@pytest.fixture
def beats() -> Iterator[list[CeleryProcess]]:
    started: list[CeleryProcess] = []
    yield started
    for process in started:
        process.stop()


def test_a_restarted_and_a_second_beat_do_not_send_a_slot_again(
    tmp_path: Path, redis_url: str, redis_client: Any, beats: list[CeleryProcess]
) -> None:
    (tmp_path / "generators.json").write_text(
        json.dumps(
            {"generators": {"mock_generator": {"type": "mock", "interval_seconds": INTERVAL}}}
        )
    )
    (tmp_path / "watchlist.json").write_text(json.dumps({"tickers": ["AAPL"]}))
    env = service_env(
        BROKER_URL=redis_url,
        REDIS_URL=redis_url,
        GENERATORS_CONFIG_PATH=str(tmp_path / "generators.json"),
        WATCHLIST_CONFIG_PATH=str(tmp_path / "watchlist.json"),
        LOG_FORMAT="json",
    )
    for name in ("MOCK_GENERATOR_INTERVAL_SECONDS", "BEAT_LOCK", "BEAT_SEND_ONCE"):
        env.pop(name, None)
    remaining = INTERVAL - time.time() % INTERVAL
    if remaining < 15:  # three beats must start within the slot: begin with a fresh one
        time.sleep(remaining + 0.05)
    slot = math.floor(time.time() / INTERVAL)

    first = start_beat(env, tmp_path / "a.log", tmp_path / "a-schedule")
    beats.append(first)
    first.wait_for("Sending due task generate:mock_generator", timeout=INTERVAL)
    first.kill()
    # Restarted with its schedule file lost (a container without its volume, `signalgen dev`):
    # beat syncs that file right after its first send, so keeping it would race the SIGKILL;
    # a fresh file is the case a killed-before-sync beat also finds, every time.
    restarted = start_beat(env, tmp_path / "a2.log", tmp_path / "a2-schedule")
    second = start_beat(env, tmp_path / "b.log", tmp_path / "b-schedule")
    beats.extend([restarted, second])
    for beat in (restarted, second):  # each found the slot due, and already sent
        wait_for_event(beat, "beat_slot_already_sent", "generate:mock_generator", INTERVAL)
    assert math.floor(time.time() / INTERVAL) == slot, "the beats took a whole slot to start"

    # The next slot: sent, once, by one of the two.
    while math.floor(time.time() / INTERVAL) == slot:
        time.sleep(0.1)
    time.sleep(3)
    for beat in (restarted, second):
        beat.stop()
    sends = generate_sends(redis_client)
    assert sends == {slot: 1, slot + 1: 1}, sends
    sent_by = [
        beat.output().count("Sending due task generate:mock_generator ")
        for beat in (restarted, second)
    ]
    assert sorted(sent_by) == [0, 1], sent_by
    # Every aligned entry is sent once per slot, not only generate.
    logged = logged_sends(first, restarted, second)
    assert logged[("generate:mock_generator", slot)] == 1, logged
    assert max(logged.values()) == 1, logged
    assert len([key for key in logged if key[0] == "pipelines-fire-periodic"]) >= 2, logged
