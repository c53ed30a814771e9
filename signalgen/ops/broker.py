"""Broker reads shared by the metrics exporter and the repair sweep (no Prometheus imports:
the repair runs inside lean workers)."""

from __future__ import annotations

from collections.abc import Sequence

#: Celery queues and the dispatcher's plain-JSON intake queue.
DEFAULT_QUEUES = ("signals.dispatch", "dispatch", "pipelines", "generate", "signals", "celery")


def queue_depths(broker_url: str, queues: Sequence[str]) -> dict[str, int]:
    """Messages waiting in each queue (0 for a queue the broker does not know yet)."""
    from kombu import Connection
    from kombu.exceptions import ChannelError

    depths: dict[str, int] = {}
    with Connection(broker_url, connect_timeout=3) as connection:
        # One attempt: a broker that is away is reported by the caller, not waited for.
        connection.ensure_connection(max_retries=0)
        channel = connection.default_channel
        for name in queues:
            try:
                depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except ChannelError:
                depths[name] = 0
                channel = connection.default_channel
    return depths
