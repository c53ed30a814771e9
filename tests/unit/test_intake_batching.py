"""The intake's batching: one by one while the pool has room, together once it has none; a
batch's task message settles every raw message it carries, once."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from kombu import Message
from kombu.exceptions import MessageStateError

from dispatcher.batching import MAX_BATCH, IntakeBatcher
from tests.support.claims import signal_payload
from tests.unit.test_intake_request import FakeChannel


def batcher(limit: int = 2, most: int = 3, max_bytes: int = 1 << 20) -> IntakeBatcher[bytes]:
    return IntakeBatcher(limit=limit, max_batch=most, size=len, max_bytes=max_bytes)


def test_while_the_pool_has_room_each_signal_goes_at_once_alone() -> None:
    b = batcher(limit=2)
    assert b.offer(b"a") == [[b"a"]]
    assert b.offer(b"b") == [[b"b"]]
    assert b.settled() == []
    assert b.offer(b"c") == [[b"c"]]


def test_once_the_pool_is_busy_newcomers_wait_and_go_together_when_one_of_ours_settles() -> None:
    b = batcher(limit=4, most=3)
    assert b.offer(b"a", busy=True) == [[b"a"]]  # none of ours in flight: it goes anyway
    assert [b.offer(m, busy=True) for m in (b"c", b"d", b"e", b"f")] == [[], [], [], []]
    assert b.settled() == [[b"c", b"d", b"e"], [b"f"]]  # at most `most` each, in order
    assert b.offer(b"g", busy=True) == []
    assert b.offer(b"h", busy=False) == [[b"g", b"h"]]  # an idle process: the waiting go too
    assert (b.unsettled, list(b.waiting)) == (3, [])


def test_at_the_limit_newcomers_wait_even_with_an_idle_process() -> None:
    b = batcher(limit=2, most=3)
    b.offer(b"a"), b.offer(b"b")
    assert [b.offer(m) for m in (b"c", b"d", b"e", b"f")] == [[], [], [], []]
    assert b.settled() == [[b"c", b"d", b"e"]]
    assert b.offer(b"g") == []  # still at the limit: behind the one already waiting
    assert b.settled() == [[b"f", b"g"]]
    assert b.settled() == []
    assert b.settled() == []
    assert (b.unsettled, list(b.waiting)) == (0, [])
    assert b.offer(b"h") == [[b"h"]]


def test_a_batch_stops_at_the_byte_limit_but_an_oversize_signal_still_goes_alone() -> None:
    b = batcher(limit=1, most=10, max_bytes=10)
    b.offer(b"x")
    for m in (b"1234", b"5678", b"90", b"A" * 50, b"b"):
        assert b.offer(m) == []
    assert b.settled() == [[b"1234", b"5678", b"90"]]
    assert b.settled() == [[b"A" * 50]]
    assert b.settled() == [[b"b"]]


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        batcher(limit=0)
    with pytest.raises(ValueError, match="at least 1"):
        batcher(most=0)


@pytest.mark.parametrize("seed", range(20))
def test_every_signal_is_handed_over_once_in_order_and_never_beyond_the_limit(seed: int) -> None:
    rng = random.Random(seed)
    limit, most = rng.randint(1, 4), rng.randint(1, 6)
    b = batcher(limit=limit, most=most)
    handed: list[bytes] = []
    in_flight: list[list[bytes]] = []
    sent = 0
    for _ in range(400):
        if rng.random() < 0.55:
            message = str(sent).encode()
            sent += 1
            out = b.offer(message, busy=rng.random() < 0.7)
        elif in_flight:
            in_flight.pop(rng.randrange(len(in_flight)))
            out = b.settled()
        else:
            continue
        for batch in out:
            assert 1 <= len(batch) <= most
            handed.extend(batch)
            in_flight.append(batch)
        assert len(in_flight) == b.unsettled <= limit
        assert not b.waiting or in_flight  # nothing waits without one of ours to settle
    while in_flight:
        in_flight.pop()
        for batch in b.settled():
            handed.extend(batch)
            in_flight.append(batch)
    assert handed == [str(n).encode() for n in range(sent)]


# -- the task message of a batch ------------------------------------------------------------------


def _raw(tag: str, channel: FakeChannel) -> Message:
    return Message(
        body=signal_payload().encode(),
        delivery_tag=tag,
        content_type="application/json",
        content_encoding="utf-8",
        delivery_info={
            "exchange": "trading-signals",
            "routing_key": "signal.x",
            "consumer_tag": "c",
        },
        channel=channel,
    )


def test_a_batch_is_one_dispatch_batch_task_whose_ack_acks_every_raw_message_once() -> None:
    from tasks.dispatch import as_dispatch_request

    channel = FakeChannel()
    settled: list[int] = []
    batch = [_raw(f"t{n}", channel) for n in range(3)]
    request = as_dispatch_request(batch, on_settled=lambda: settled.append(1))
    assert request.headers["task"] == "signals.dispatch_batch"
    (args, _kwargs, _embed) = json.loads(request.body)
    [envelopes] = args
    assert [e["body"] for e in envelopes] == [m.body.decode() for m in batch]
    request.ack()
    assert (channel.acked, settled) == (["t0", "t1", "t2"], [1])
    with pytest.raises(MessageStateError):
        request.ack()
    assert (channel.acked, settled) == (["t0", "t1", "t2"], [1])


@pytest.mark.parametrize("requeue", [True, False])
def test_rejecting_a_batch_rejects_every_raw_message(requeue: bool) -> None:
    from tasks.dispatch import as_dispatch_request

    channel = FakeChannel()
    settled: list[int] = []
    request = as_dispatch_request(
        [_raw("a", channel), _raw("b", channel)], on_settled=lambda: settled.append(1)
    )
    request.reject(requeue=requeue)
    assert (channel.rejected, channel.acked, settled) == ([("a", requeue), ("b", requeue)], [], [1])


def test_one_message_is_still_a_plain_dispatch_task() -> None:
    from tasks.dispatch import as_dispatch_request

    channel = FakeChannel()
    request = as_dispatch_request([_raw("a", channel)])
    assert request.headers["task"] == "signals.dispatch"
    request.ack()
    assert channel.acked == ["a"]


def test_the_batch_task_refuses_what_the_intake_never_sends() -> None:
    from tasks.dispatch import dispatch_batch

    for bad in ({"body": "x"}, [{}] * (MAX_BATCH + 1)):
        dispatch_batch.push_request(id="t", root_id="t")
        try:
            with pytest.raises(TypeError, match=f"at most {MAX_BATCH} envelopes"):
                dispatch_batch.run(bad)
        finally:
            dispatch_batch.pop_request()


def test_a_batch_that_fails_but_not_for_an_outage_is_split_into_lone_dispatches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from dispatcher import service
    from signalgen.bus.topology import DISPATCH_QUEUE
    from tasks import dispatch as module

    sent: list[tuple[Any, str]] = []
    monkeypatch.setattr(
        module.dispatch, "apply_async", lambda args, queue: sent.append((args, queue))
    )
    resources = SimpleNamespace(db=None, index=SimpleNamespace(current=lambda: None))
    import tasks.context

    monkeypatch.setattr(tasks.context, "current", lambda: SimpleNamespace(dispatcher=resources))
    envelopes = [{"n": 1}, {"n": 2}]

    def boom(*_: Any, **__: Any) -> None:
        raise KeyError("a bug met by one signal")

    monkeypatch.setattr(service, "dispatch_many", boom)
    module.dispatch_batch.push_request(id="t", root_id="t")
    try:
        assert module.dispatch_batch.run(envelopes) == [{"split": True}] * 2
        assert sent == [(({"n": 1},), DISPATCH_QUEUE), (({"n": 2},), DISPATCH_QUEUE)]

        def outage(*_: Any, **__: Any) -> None:
            raise ConnectionError("database away")

        sent.clear()
        monkeypatch.setattr(service, "dispatch_many", outage)
        with pytest.raises(ConnectionError):  # retried for the whole batch, not split
            module.dispatch_batch.run(envelopes)
        assert sent == []
    finally:
        module.dispatch_batch.pop_request()


def test_batches_released_before_a_consumer_restart_are_dropped_not_handed_to_a_new_handler() -> (
    None
):
    """A batch released by a settle, handed over on the loop's next turn after the consumer
    restarted (Redis went away): its raw messages belong to the closed channel, which the broker
    restores; handing them over killed the worker ("'NoneType' object is not callable")."""
    from types import SimpleNamespace

    from tasks.dispatch import SignalIntake

    handed: list[Any] = []
    soon: list[Any] = []
    consumer = SimpleNamespace(
        hub=SimpleNamespace(call_soon=lambda fn, *args: soon.append((fn, args))),
        create_task_handler=lambda: handed.append,
    )
    intake = SignalIntake.__new__(SignalIntake)
    intake._consumer, intake._handler = consumer, None
    channel = FakeChannel()
    intake._batcher = old = IntakeBatcher(limit=1, max_batch=4, size=lambda m: len(m.body))
    intake.on_message(_raw("a", channel))  # goes at once
    intake.on_message(_raw("b", channel))  # waits
    assert len(handed) == 1
    handed[0].ack()  # settles: "b" is released for the loop's next turn
    assert len(soon) == 1
    # The consumer restarts before that turn: a new handler to build, a new batcher.
    intake._handler = None
    intake._batcher = IntakeBatcher(limit=1, max_batch=4, size=lambda m: len(m.body))
    fn, args = soon.pop()
    fn(*args)
    assert len(handed) == 1 and old is not intake._batcher  # dropped, nothing raised
    # The allowed case: on the current batcher a released batch is handed over, the handler
    # built on first use.
    intake.on_message(_raw("c", channel))
    assert len(handed) == 2 and handed[1].headers["task"] == "signals.dispatch"
