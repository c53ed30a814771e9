"""A raw signal becomes a `signals.dispatch` task request on the same delivery, in memory."""

from __future__ import annotations

import json
from typing import Any

from celery.app.task import Context
from kombu import Message

from dispatcher.intake import decode_envelope
from signalgen.bus.topology import DISPATCH_QUEUE
from tasks.dispatch import MAX_ARGS_REPR, as_dispatch_request, dispatch


class FakeChannel:
    no_ack_consumers = None

    def __init__(self) -> None:
        self.acked: list[Any] = []
        self.rejected: list[tuple[Any, bool]] = []

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        self.acked.append(delivery_tag)

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        self.rejected.append((delivery_tag, requeue))


def raw(body: bytes, content_type: str, channel: FakeChannel) -> Message:
    return Message(
        body=body,
        delivery_tag="tag-7",
        content_type=content_type,
        content_encoding="binary" if content_type != "application/json" else "utf-8",
        delivery_info={
            "exchange": "trading-signals",
            "routing_key": "signal.mock.AAPL",
            "consumer_tag": "c1",
            "redelivered": True,
        },
        headers={"x-published-at": 1700000000.5},
        channel=channel,
    )


def test_a_pickle_is_carried_as_bytes_and_acks_act_on_the_raw_delivery() -> None:
    channel = FakeChannel()
    evil = b"cos\nsystem\n(S'touch /tmp/never'\ntR."
    request = as_dispatch_request([raw(evil, "application/x-python-serialize", channel)])
    assert request.headers["task"] == "signals.dispatch"
    assert request.content_type == "application/json"
    (args, kwargs, _embed) = json.loads(request.body)
    assert kwargs == {}
    envelope = args[0]
    assert envelope["content_type"] == "application/x-python-serialize"
    assert envelope["routing_key"] == "signal.mock.AAPL"
    assert envelope["headers"]["x-published-at"] == 1700000000.5
    try:
        decode_envelope(envelope)
    except ValueError as refused:  # the dispatcher refuses it, from the raw bytes it carries
        assert refused.body == evil  # type: ignore[attr-defined]
    else:
        raise AssertionError("a pickle was accepted")
    request.ack()
    assert channel.acked == ["tag-7"]
    request2 = as_dispatch_request([raw(evil, "application/x-python-serialize", channel)])
    request2.reject(requeue=True)
    assert channel.rejected == [("tag-7", True)]


def test_a_retry_goes_to_the_dispatch_queue_never_back_to_the_exchange() -> None:
    body = json.dumps({"signal_id": "x", "pad": "y" * 5000}).encode()
    request = as_dispatch_request([raw(body, "application/json", FakeChannel())])
    assert request.delivery_info["exchange"] == ""
    assert request.delivery_info["routing_key"] == DISPATCH_QUEUE
    assert request.delivery_info["redelivered"] is True
    (args, _, _) = json.loads(request.body)
    context = Context(
        args=args, kwargs={}, delivery_info=request.delivery_info, headers=request.headers
    )
    retry = dispatch.signature_from_request(context)
    assert retry.options["queue"] == DISPATCH_QUEUE
    assert "exchange" not in retry.options
    assert len(request.headers["argsrepr"]) <= MAX_ARGS_REPR
