"""run_generator: compute wrapped, output validated, new signals recorded and published once."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
from kombu import Connection, Queue
from sqlalchemy import func, select

from generators.base import Bars, BaseSignalGenerator, GeneratorConfig, Tick
from schemas.config import GeneratorEntry
from schemas.signal import Bias, Signal, SignalBias, SignalType, stable_signal_id
from signalgen.bus import KombuPublisher
from signalgen.bus.topology import SIGNAL_EXCHANGE
from signalgen.config import ConfigError, GeneratorSpec
from signalgen.runtime import Resources, build_resources, run_generator
from signalgen.settings import Settings
from signalgen.storage import Database
from signalgen.storage.models import SignalRecord

NOW = datetime(2026, 3, 2, 14, 30, 7, tzinfo=UTC)


class SlotGenerator(BaseSignalGenerator[GeneratorConfig]):
    """One signal per ticker per tick, id from the tick (like the mock generator)."""

    name: ClassVar[str] = "slot_test"
    signal_type: ClassVar[SignalType] = SignalType.MOCK
    config_model: ClassVar[type[GeneratorConfig]] = GeneratorConfig
    inputs: ClassVar[Literal["bars", "none", "news", "signals"]] = "none"

    def compute(self, data: Any, tick: Tick) -> list[Signal]:
        return [
            Signal(
                signal_id=stable_signal_id(
                    source=self.source,
                    signal_type=self.signal_type,
                    tickers=(t,),
                    event_key=tick.key,
                ),
                signal_type=self.signal_type,
                tickers=(t,),
                bias={t: SignalBias(ticker=t, bias=Bias.NEUTRAL, confidence=0.5)},
                timestamp=tick.now,
                event_time=tick.now,
                source=self.source,
            )
            for t in self.tickers
        ]


class BrokenGenerator(SlotGenerator):
    name: ClassVar[str] = "broken_test"

    def compute(self, data: Any, tick: Tick) -> list[Signal]:
        raise ZeroDivisionError("division by zero in the indicator")


class GarbageGenerator(SlotGenerator):
    """Returns one good signal, one non-signal, one with a foreign source."""

    name: ClassVar[str] = "garbage_test"

    def compute(self, data: Any, tick: Tick) -> list[Any]:
        good = super().compute(data, tick)[0]
        foreign = good.model_copy(update={"source": "someone_else", "signal_id": uuid.uuid4()})
        return [good, {"signal_id": "nope"}, foreign]


class LastCloseGenerator(SlotGenerator):
    """A bars generator: one signal naming the last close it saw (id from the bar date)."""

    name: ClassVar[str] = "bars_test"
    inputs: ClassVar[Literal["bars", "none", "news", "signals"]] = "bars"

    def lookback(self) -> int:
        return 3

    def compute(self, data: Any, tick: Tick) -> list[Signal]:
        assert isinstance(data, Bars) and data.n_bars == 3
        day = data.day(-1)
        t = self.tickers[0]
        return [
            Signal(
                signal_id=stable_signal_id(
                    source=self.source,
                    signal_type=self.signal_type,
                    tickers=(t,),
                    event_key=day.isoformat(),
                ),
                signal_type=self.signal_type,
                tickers=(t,),
                bias={t: SignalBias(ticker=t, bias=Bias.BULLISH, confidence=0.9)},
                metadata={"close": float(data.close[0, -1])},
                timestamp=tick.now,
                event_time=tick.now,
                source=self.source,
            )
        ]


def spec_of(
    cls: type[SlotGenerator],
    name: str,
    tickers: tuple[str, ...] = ("AAPL", "MSFT"),
) -> GeneratorSpec:
    entry = GeneratorEntry(type=cls.name, interval_seconds=60)
    return GeneratorSpec(
        name=name, entry=entry, generator=cls(GeneratorConfig(), source=name, tickers=tickers)
    )


class FakeBarStore:
    """Stands in for the market-data store: records what was asked, serves fixed bars."""

    def __init__(self) -> None:
        self.requests: list[tuple[tuple[str, ...], int]] = []

    def load_bars(self, tickers: tuple[str, ...], n: int) -> Bars:
        self.requests.append((tuple(tickers), n))
        dates = np.array(["2026-02-26", "2026-02-27", "2026-03-02"], dtype="datetime64[D]")
        close = np.array([[10.0, 11.0, 12.5]])
        return Bars(
            tickers=tuple(tickers),
            dates=dates,
            open=close,
            high=close,
            low=close,
            close=close,
            volume=close,
        )


@pytest.fixture
def bus() -> Iterator[tuple[Connection, Queue]]:
    connection = Connection("memory://")
    queue = Queue(
        f"test-sub-{uuid.uuid4().hex[:8]}", exchange=SIGNAL_EXCHANGE, routing_key="signal.#"
    )
    queue(connection.default_channel).declare()
    yield connection, queue
    connection.release()


def received(bus: tuple[Connection, Queue]) -> list[Signal]:
    connection, queue = bus
    bound = queue(connection.default_channel)
    out = []
    while (message := bound.get(no_ack=True)) is not None:
        out.append(Signal.from_json(message.body))
    return out


def resources_for(database: Database, *specs: GeneratorSpec, **kwargs: Any) -> Resources:
    return build_resources(
        Settings(),
        specs={s.name: s for s in specs},
        database=database,
        publisher=KombuPublisher("memory://"),
        **kwargs,
    )


def test_two_runs_of_one_slot_publish_once(sqlite_db: Database, bus: Any) -> None:
    spec = spec_of(SlotGenerator, "slot_gen")
    resources = resources_for(sqlite_db, spec)
    tick = Tick.for_slot(NOW, 60)
    first = run_generator(spec, tick, resources)
    # A second beat (or a retry) fires the same slot a few seconds later.
    second = run_generator(spec, Tick.for_slot(NOW.replace(second=50), 60), resources)
    assert (first.computed, first.new, first.published) == (2, 2, 2)
    assert (second.computed, second.new, second.published) == (2, 0, 0)
    assert sorted(s.tickers[0] for s in received(bus)) == ["AAPL", "MSFT"]
    # The next slot is a new check: new ids.
    third = run_generator(spec, Tick.for_slot(NOW.replace(minute=31), 60), resources)
    assert third.new == 2


def test_generator_that_raises_is_logged_and_counted(
    sqlite_db: Database, bus: Any, caplog: pytest.LogCaptureFixture
) -> None:
    spec = spec_of(BrokenGenerator, "broken_gen")
    resources = resources_for(sqlite_db, spec)
    with caplog.at_level(logging.ERROR, logger="signalgen.runtime"):
        result = run_generator(spec, Tick.for_slot(NOW, 60), resources)
        run_generator(spec, Tick.for_slot(NOW, 60), resources)
    assert result.failed == "ZeroDivisionError: division by zero in the indicator"
    assert resources.counters["generator_failed"] == 2
    events = [r for r in caplog.records if getattr(r, "event", None) == "generator_failed"]
    assert len(events) == 2
    assert events[0].fields["generator"] == "broken_gen"  # type: ignore[attr-defined]
    assert "division by zero" in events[0].fields["reason"]  # type: ignore[attr-defined]
    assert received(bus) == []


def test_invalid_output_is_rejected_and_the_rest_published(sqlite_db: Database, bus: Any) -> None:
    spec = spec_of(GarbageGenerator, "garbage_gen")
    resources = resources_for(sqlite_db, spec)
    result = run_generator(spec, Tick.for_slot(NOW, 60), resources)
    assert (result.computed, result.rejected, result.new, result.published) == (3, 2, 1, 1)
    assert resources.counters["signals_rejected"] == 2
    assert [s.source for s in received(bus)] == ["garbage_gen"]


def test_bars_generator_gets_its_lookback_from_the_store(sqlite_db: Database, bus: Any) -> None:
    spec = spec_of(LastCloseGenerator, "bars_gen", tickers=("NVDA",))
    store = FakeBarStore()
    resources = resources_for(sqlite_db, spec, bar_store_factory=lambda _db: store)
    for minute in (30, 35, 40):  # three checks see the same last bar: one signal
        run_generator(spec, Tick.for_slot(NOW.replace(minute=minute), 300), resources)
    assert store.requests == [(("NVDA",), 3)] * 3
    [signal] = received(bus)
    assert signal.metadata == {"close": 12.5}
    with sqlite_db.session() as session:
        assert session.scalar(select(func.count()).select_from(SignalRecord)) == 1


def test_unknown_generator_name_is_a_config_error(sqlite_db: Database) -> None:
    resources = resources_for(sqlite_db, spec_of(SlotGenerator, "slot_gen"))
    with pytest.raises(ConfigError, match=r"generators\.json: no enabled generator named 'nope'"):
        resources.spec("nope")
