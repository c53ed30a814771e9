"""The aligned schedule: pure is_due with an injected clock, and the beat schedule from config."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery
from celery.beat import ScheduleEntry

from generators.base import Tick
from signalgen.config import ConfigError
from signalgen.settings import Settings
from tasks.schedules import (
    MARKER_GRACE_SECONDS,
    NEVER,
    AlignedSchedule,
    build_beat_schedule,
    plan_send,
)

T0 = datetime(2026, 3, 2, 14, 30, 0, tzinfo=UTC)  # a multiple of 60 s since the epoch
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_fires_the_current_slot_at_start_then_once_per_slot() -> None:
    clock = Clock(T0 + timedelta(seconds=17))
    schedule = AlignedSchedule(60, nowfun=clock)
    due, next_check = schedule.is_due(NEVER)
    assert due and next_check == pytest.approx(43)
    last_run = clock.now
    clock.now = T0 + timedelta(seconds=59.5)
    due, next_check = schedule.is_due(last_run)
    assert not due and next_check == pytest.approx(0.5)
    clock.now = T0 + timedelta(seconds=60)
    due, next_check = schedule.is_due(last_run)
    assert due and next_check == pytest.approx(60)


def test_after_an_outage_one_run_not_a_backlog() -> None:
    clock = Clock(T0 + timedelta(hours=3, seconds=5))
    schedule = AlignedSchedule(60, nowfun=clock)
    assert schedule.is_due(T0).is_due
    assert not schedule.is_due(clock.now).is_due


def test_two_beats_started_apart_fire_the_same_slots() -> None:
    """Beats started 13 s and 41 s into a slot agree on every due moment and on the tick key."""
    fired: dict[str, list[str]] = {}
    for name, offset in (("a", 13), ("b", 41)):
        clock = Clock(T0 + timedelta(seconds=offset))
        schedule = AlignedSchedule(60, nowfun=clock)
        last = NEVER
        keys = []
        for _ in range(200):  # beat's loop: check, sleep as told
            due, wait = schedule.is_due(last)
            if due:
                last = clock.now
                keys.append(Tick.for_slot(clock.now, 60).key)
            clock.now += timedelta(seconds=wait)
            if clock.now > T0 + timedelta(minutes=5):
                break
        fired[name] = keys
    assert fired["a"] == fired["b"]
    assert len(fired["a"]) == 6  # slots 14:30 .. 14:35


def test_remaining_estimate_and_validation() -> None:
    schedule = AlignedSchedule(300, nowfun=Clock(T0 + timedelta(seconds=100)))
    assert schedule.remaining_estimate(T0) == timedelta(seconds=200)
    with pytest.raises(ValueError, match="positive"):
        AlignedSchedule(0)
    with pytest.raises(ValueError, match="positive"):
        AlignedSchedule(-5)


def test_pickles_for_beats_schedule_file_and_compares_by_interval() -> None:
    schedule = AlignedSchedule(60)
    assert pickle.loads(pickle.dumps(schedule)) == schedule
    assert AlignedSchedule(60) != AlignedSchedule(30)


def test_a_send_names_its_slot_and_expires_within_it() -> None:
    """Beat's start-up send late in a slot must not run in the next slot, which beat sends too:
    the task is told when it was sent, and expires at the slot's end at the latest."""
    schedule = AlignedSchedule(60)
    late = T0 + timedelta(seconds=50)
    send = plan_send(
        "generate:mock",
        "signals.generate",
        schedule,
        late,
        kwargs={},
        options={"queue": "generate", "expires": 30.0},
    )
    assert send.slot_start == T0 and send.slot_end == T0 + timedelta(seconds=60)
    assert send.options == {"queue": "generate", "expires": T0 + timedelta(seconds=60)}
    assert send.kwargs == {"slot_time": late.isoformat()}
    slot_time = datetime.fromisoformat(send.kwargs["slot_time"])
    assert Tick.for_slot(slot_time, 60).key == Tick.for_slot(T0, 60).key
    assert send.marker_ttl == 10 + MARKER_GRACE_SECONDS
    # Early in the slot the entry's own lifetime applies (it ends before the slot does).
    early = plan_send(
        "generate:mock",
        "signals.generate",
        schedule,
        T0 + timedelta(seconds=1),
        options={"expires": 30.0},
    )
    assert early.options["expires"] == T0 + timedelta(seconds=31)
    assert early.key == send.key == f"generate:mock:60s:{int(T0.timestamp()) // 60}"


def test_a_send_key_changes_with_slot_entry_and_interval_only() -> None:
    def key(name: str, seconds: float, moment: datetime) -> str:
        return plan_send(name, "signals.outbox_sweep", AlignedSchedule(seconds), moment).key

    assert key("a", 60, T0) == key("a", 60, T0 + timedelta(seconds=59.9))
    assert key("a", 60, T0) != key("a", 60, T0 + timedelta(seconds=60))
    assert key("a", 60, T0) != key("b", 60, T0)
    assert key("a", 60, T0) != key("a", 30, T0)
    # Only `signals.generate` is told its slot; without a lifetime, the slot's end bounds it.
    sweep = plan_send("outbox-sweep", "signals.outbox_sweep", AlignedSchedule(30), T0)
    assert sweep.kwargs == {} and sweep.options == {"expires": T0 + timedelta(seconds=30)}


def write_config(tmp_path: Path, generators: dict[str, object]) -> Path:
    path = tmp_path / "generators.json"
    path.write_text(json.dumps({"generators": generators}))
    (tmp_path / "watchlist.json").write_text(json.dumps({"tickers": ["AAPL", "MSFT"]}))
    return path


def settings_for(tmp_path: Path, generators: dict[str, object], **env: str) -> Settings:
    path = write_config(tmp_path, generators)
    return Settings(
        GENERATORS_CONFIG_PATH=path,  # type: ignore[call-arg]
        WATCHLIST_CONFIG_PATH=tmp_path / "watchlist.json",
        **env,
    )


GENERATORS = {
    "mock_generator": {"type": "mock", "interval_seconds": 60},
    "golden_cross_generator": {"type": "golden_cross", "interval_seconds": 300},
    "off": {"type": "mock", "interval_seconds": 60, "enabled": False},
}


def test_beat_schedule_from_config(tmp_path: Path) -> None:
    schedule = build_beat_schedule(settings_for(tmp_path, GENERATORS))
    assert set(schedule) == {
        "generate:mock_generator",
        "generate:golden_cross_generator",
        "outbox-sweep",
        "pipelines-fire-periodic",
        "bus-repair",
    }
    repair = schedule["bus-repair"]
    assert repair["task"] == "signals.repair" and repair["schedule"] == AlignedSchedule(60)
    mock = schedule["generate:mock_generator"]
    assert mock["task"] == "signals.generate" and mock["args"] == ["mock_generator"]
    assert mock["schedule"] == AlignedSchedule(60)
    assert mock["options"] == {"queue": "generate", "expires": 30.0}
    assert schedule["generate:golden_cross_generator"]["options"]["expires"] == 150.0
    assert schedule["outbox-sweep"]["task"] == "signals.outbox_sweep"
    assert schedule["outbox-sweep"]["schedule"] == AlignedSchedule(30)
    fire = schedule["pipelines-fire-periodic"]
    assert fire["task"] == "pipelines.fire_periodic" and fire["schedule"] == AlignedSchedule(10)
    assert fire["options"]["queue"] == "pipelines"
    for entry in schedule.values():
        assert 0 < entry["options"]["expires"] <= entry["schedule"].seconds


def test_env_overrides_intervals(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        GENERATORS,
        MOCK_GENERATOR_INTERVAL_SECONDS="15",
        GOLDEN_CROSS_CHECK_INTERVAL_SECONDS="900",
    )
    schedule = build_beat_schedule(settings)
    assert schedule["generate:mock_generator"]["schedule"] == AlignedSchedule(15)
    assert schedule["generate:mock_generator"]["options"]["expires"] == 7.5
    assert schedule["generate:golden_cross_generator"]["schedule"] == AlignedSchedule(900)


def test_celery_accepts_the_entries_and_a_new_entry_is_due_at_once(tmp_path: Path) -> None:
    app = Celery("schedule-test", set_as_current=False)
    app.conf.enable_utc = True
    schedule = build_beat_schedule(settings_for(tmp_path, GENERATORS))
    entry = ScheduleEntry(
        **dict(schedule["generate:mock_generator"], name="generate:mock_generator", app=app)
    )
    assert entry.is_due().is_due
    assert not next(entry).is_due().is_due  # once sent, not again in this slot


def test_unknown_generator_type_names_file_and_field(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, {"x": {"type": "nonesuch", "interval_seconds": 60}})
    with pytest.raises(ConfigError, match=r"generators\.json: generators\.x\.type: .*nonesuch"):
        build_beat_schedule(settings)


@pytest.mark.parametrize("program", ["beat", "worker"])
def test_bad_config_stops_celery_at_start_up(tmp_path: Path, program: str) -> None:
    path = write_config(tmp_path, {"mock_generator": {"type": "mock", "interval_seconds": -5}})
    env = {
        "PATH": "/usr/bin:/bin",
        "GENERATORS_CONFIG_PATH": str(path),
        "BROKER_URL": "memory://",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", program, "--loglevel=INFO"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "configuration error" in done.stderr
    assert f"{path}: generators.mock_generator.interval_seconds" in done.stderr
