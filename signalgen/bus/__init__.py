"""Recording and publishing signals: history + outbox rows, then the `trading-signals` exchange."""

from signalgen.bus.headers import PUBLISHED_AT_HEADER
from signalgen.bus.outbox import (
    DEFAULT_SWEEP_AGE,
    PublishOutcome,
    publish_pending,
    publish_recorded,
)
from signalgen.bus.publisher import (
    KombuPublisher,
    PublishError,
    SignalPublisher,
)
from signalgen.bus.recorder import record_signals

__all__ = [
    "DEFAULT_SWEEP_AGE",
    "PUBLISHED_AT_HEADER",
    "KombuPublisher",
    "PublishError",
    "PublishOutcome",
    "SignalPublisher",
    "publish_pending",
    "publish_recorded",
    "record_signals",
]
