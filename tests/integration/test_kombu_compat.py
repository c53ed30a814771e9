"""signalgen.bus.kombu_compat: a worker survives its Redis broker dying mid-poll.

The sequence is celery 5.7's consumer on a lost connection, on a real redis-server that is
SIGKILLed while the channel has a BRPOP in flight and one message delivered but not acked.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Message, Queue
from kombu.common import ignore_errors

from signalgen.bus import kombu_compat
from tests.faults.harness import OwnRedis

pytestmark = pytest.mark.integration


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    own = OwnRedis(tmp_path, appendonly=False)
    own.start()
    try:
        yield own
    finally:
        own.stop()


def consumer_mid_poll(url: str) -> tuple[Connection, list[Message]]:
    """A worker-like connection: two channels (the consumer's default one and a second, as the
    worker's intake consumer has), each with one message delivered but not acked and a BRPOP
    in flight."""
    queues = [
        Queue(name, Exchange("compat", type="direct"), routing_key=name) for name in ("a", "b")
    ]
    conn = Connection(url)
    with conn.Producer() as producer:
        for queue in queues:
            producer.publish(
                {"queue": queue.name},
                exchange=queue.exchange,
                routing_key=queue.name,
                declare=[queue],
            )
    delivered: list[Message] = []
    for channel, queue in zip((conn.default_channel, conn.channel()), queues, strict=True):
        consumer = conn.Consumer(
            [queue], channel=channel, callbacks=[lambda _body, msg: delivered.append(msg)]
        )
        consumer.consume()
    while len(delivered) < 2:
        conn.drain_events(timeout=5)
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=0.2)  # the queues are empty: the BRPOPs stay in flight
    assert conn.default_channel._in_poll
    return conn, delivered


def close_like_celery_on_connection_loss(conn: Connection) -> None:
    """celery.worker.consumer.Consumer.on_connection_error_after_connected (celery 5.7)."""
    with contextlib.suppress(Exception):  # as celery does
        conn.collect(socket_timeout=1)
    ignore_errors(conn, conn.close)


def close_after_redis_died(own_redis: OwnRedis) -> BaseException | None:
    """Run a worker's close on a Redis that died mid-poll; what the close raised, if anything."""
    conn, delivered = consumer_mid_poll(own_redis.url)
    assert sorted(m.payload["queue"] for m in delivered) == ["a", "b"]
    assert not any(m.acknowledged for m in delivered)

    own_redis.crash()
    channels = list(conn.transport.channels)
    raised: BaseException | None = None
    try:
        close_like_celery_on_connection_loss(conn)
    except Exception as exc:  # what kombu raises is the observation
        raised = exc
    for channel in channels:
        channel.qos._on_collect.cancel()  # kombu's at-exit restore: this Redis is gone by then
    return raised


def test_the_guard_range_matches_the_installed_kombu(
    own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the guard, the installed kombu crashes exactly when it is in the guard's range.

    Fails on a kombu upgrade that fixed the bug inside the range (narrow
    `REDIS_CONNPARAMS_AFFECTED`, drop the guard once no supported kombu needs it), or that still
    has it outside the range (widen it)."""
    from kombu.transport import redis as redis_transport

    current = redis_transport.Channel._connparams
    monkeypatch.setattr(
        redis_transport.Channel, "_connparams", getattr(current, "__wrapped__", current)
    )
    raised = close_after_redis_died(own_redis)

    crashes = isinstance(raised, AttributeError) and "hostname" in str(raised)
    assert raised is None or crashes, f"unexpected error from the unguarded close: {raised!r}"
    version = ".".join(map(str, kombu_compat.kombu_version()))
    in_range = kombu_compat.redis_connparams_guard_needed()
    assert crashes == in_range, (
        f"kombu {version} {'crashes' if crashes else 'no longer crashes'} without the guard, "
        f"but it is {'in' if in_range else 'outside'} kombu_compat.REDIS_CONNPARAMS_AFFECTED "
        f"{kombu_compat.REDIS_CONNPARAMS_AFFECTED}: revisit the range"
    )


def test_guard_range_bounds() -> None:
    first, end = kombu_compat.REDIS_CONNPARAMS_AFFECTED
    assert kombu_compat.redis_connparams_guard_needed(first)
    assert not kombu_compat.redis_connparams_guard_needed(end)
    assert not kombu_compat.redis_connparams_guard_needed((first[0], first[1] - 1, 99))


def test_closing_a_consumer_after_its_redis_died_raises_nothing(own_redis: OwnRedis) -> None:
    from kombu.transport import redis as redis_transport

    kombu_compat.install()
    guarded = getattr(redis_transport.Channel._connparams, "_signalgen_guarded", False)
    assert guarded == kombu_compat.redis_connparams_guard_needed()

    # without the guard (on the affected kombu): AttributeError 'hostname'
    assert close_after_redis_died(own_redis) is None

    # The worker's next step is a fresh connection: it works once Redis is back.
    own_redis.start()
    with Connection(own_redis.url) as fresh:
        fresh.ensure_connection(max_retries=3)
        assert fresh.connected


def test_install_is_idempotent_and_keeps_healthy_channels_working(own_redis: OwnRedis) -> None:
    if not kombu_compat.redis_connparams_guard_needed():
        pytest.skip("the installed kombu is outside the guard's range: nothing installed")
    kombu_compat.install()
    kombu_compat.install()
    from kombu.transport import redis as redis_transport

    guarded = redis_transport.Channel._connparams
    assert getattr(guarded, "__wrapped__", None) is not None
    assert not hasattr(guarded.__wrapped__, "__wrapped__")  # wrapped once, not twice

    conn, delivered = consumer_mid_poll(own_redis.url)
    for message in delivered:
        message.ack()
    conn.close()


def test_a_channel_reuses_one_redis_client_per_pool(own_redis: OwnRedis) -> None:
    """Guard 2: one `redis.Redis` per channel pool, messages still flow, a new pool gets a new
    client (the channel's old client is never handed out over a dropped pool)."""
    kombu_compat.install()
    kombu_compat.install()
    from kombu.transport import redis as redis_transport

    reused = redis_transport.Channel._create_client
    assert not hasattr(reused.__wrapped__, "__wrapped__")  # wrapped once, not twice

    queue = Queue("reuse", Exchange("compat", type="direct"), routing_key="reuse")
    with Connection(own_redis.url) as conn:
        channel = conn.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        assert channel._create_client(asynchronous=True) is not first  # BRPOP client apart
        with conn.Producer() as producer:
            for n in range(3):
                producer.publish(
                    {"n": n}, exchange=queue.exchange, routing_key="reuse", declare=[queue]
                )
        assert channel._create_client() is first
        got: list[int] = []

        def take(body: Any, message: Message) -> None:
            got.append(body["n"])
            message.ack()

        with conn.Consumer([queue], callbacks=[take]):
            while len(got) < 3:
                conn.drain_events(timeout=5)
        assert sorted(got) == [0, 1, 2]
        assert first.llen("reuse") == 0

        # The channel drops its pool (as on close or reconnect): the next client is new, on the
        # new pool, and works.
        old_pool = channel._pool
        channel._pool = None
        second = channel._create_client()
        assert second is not first
        assert second.connection_pool is channel._pool is not old_pool
        assert second.ping()

    with Connection(own_redis.url) as other:
        # per channel, never shared across them
        assert other.default_channel._create_client() is not first
