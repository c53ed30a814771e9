"""Recording and publishing signals: history + outbox rows, then the `trading-signals` exchange."""

from signalgen.publishing.headers import PUBLISHED_AT_HEADER
from signalgen.publishing.outbox import (
    DEFAULT_SWEEP_AGE,
    PublishOutcome,
    publish_pending,
    publish_recorded,
)
from signalgen.publishing.publisher import (
    KombuPublisher,
    PublishError,
    SignalPublisher,
)
from signalgen.publishing.recorder import record_signals

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
