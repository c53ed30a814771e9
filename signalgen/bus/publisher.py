"""Putting signals on the bus: the plain JSON Signal on the `trading-signals` topic exchange.

Generators never see this module; the framework hands a `SignalPublisher` to the publishing step.
`KombuPublisher` works on any Kombu transport (Redis in production, `memory://` in unit tests,
RabbitMQ through the same code).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Protocol, runtime_checkable

from kombu.connection import Connection
from kombu.entity import PERSISTENT_DELIVERY_MODE
from kombu.messaging import Producer

from signalgen.bus.headers import PUBLISHED_AT_HEADER as PUBLISHED_AT_HEADER
from signalgen.bus.topology import DISPATCH_INTAKE_QUEUE, SIGNAL_EXCHANGE
from signalgen.logs import redact

#: Bounded: a broker that is down must not hold a worker for long. What fails stays in the outbox.
DEFAULT_RETRY_POLICY: dict[str, float] = {
    "max_retries": 2,
    "interval_start": 0.2,
    "interval_step": 0.5,
    "interval_max": 1.0,
}


#: A signal message's fixed properties: JSON text kept across a broker restart, on the signal
#: exchange, declared with the dispatcher's intake queue so nothing published is dropped unbound.
SIGNAL_MESSAGE: dict[str, Any] = {
    "exchange": SIGNAL_EXCHANGE,
    "content_type": "application/json",
    "content_encoding": "utf-8",
    "delivery_mode": PERSISTENT_DELIVERY_MODE,
    "declare": [SIGNAL_EXCHANGE, DISPATCH_INTAKE_QUEUE],
}


class PublishError(RuntimeError):
    """The broker did not take the message; it stays in the outbox for the sweep."""


@runtime_checkable
class SignalPublisher(Protocol):
    """Where recorded signals go. `payload` is the Signal's JSON exactly as recorded."""

    def publish(self, payload: str, routing_key: str) -> None:
        """Publish one signal or raise PublishError."""

    def close(self) -> None:
        """Release connections."""


class KombuPublisher:
    """Publishes to `SIGNAL_EXCHANGE` through one Kombu connection (thread-safe, per process).

    Every publish declares the exchange and the dispatcher's intake queue (cached per
    connection), so signals are kept for the dispatcher even before any worker consumes them.
    """

    def __init__(
        self,
        url: str,
        *,
        retry_policy: dict[str, float] | None = None,
        connect_timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.retry_policy = dict(retry_policy or DEFAULT_RETRY_POLICY)
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._producer: Producer | None = None

    def _ensure_producer(self) -> Producer:
        if self._producer is None:
            self._connection = Connection(
                self.url,
                connect_timeout=self.connect_timeout,
                transport_options={
                    "socket_connect_timeout": self.connect_timeout,
                    "socket_timeout": max(self.connect_timeout, 5.0),
                    "max_retries": self.retry_policy.get("max_retries", 2),
                },
            )
            self._producer = Producer(
                self._connection, exchange=SIGNAL_EXCHANGE, auto_declare=False
            )
        return self._producer

    def connect(self) -> None:
        """Connect and declare the exchange and the intake queue now, so that the first publish
        does not pay for them (a warm-up). Raises PublishError; the next publish starts over."""
        with self._lock:
            try:
                producer = self._ensure_producer()
                for entity in (SIGNAL_EXCHANGE, DISPATCH_INTAKE_QUEUE):
                    producer.maybe_declare(entity)
            except Exception as exc:
                self._reset()
                raise PublishError(redact(f"{type(exc).__name__}: {exc}")) from exc

    def publish(self, payload: str, routing_key: str) -> None:
        headers = {PUBLISHED_AT_HEADER: time.time()}
        with self._lock:
            try:
                producer = self._ensure_producer()
                producer.publish(
                    payload.encode("utf-8"),
                    routing_key=routing_key,
                    headers=headers,
                    retry=True,
                    retry_policy=dict(self.retry_policy),
                    **SIGNAL_MESSAGE,
                )
            except Exception as exc:
                # Drop the connection: the next publish starts from a clean one.
                self._reset()
                raise PublishError(redact(f"{type(exc).__name__}: {exc}")) from exc

    def _reset(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            # A broken connection may fail to close; there is nothing more to do with it.
            with contextlib.suppress(Exception):
                connection.release()

    def close(self) -> None:
        with self._lock:
            self._reset()

    def __enter__(self) -> KombuPublisher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
