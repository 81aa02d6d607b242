"""Channels: signed webhooks against a real local receiver (retries with backoff,
dead letters, delivery ids), and the live channel's wait for a stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import httpx
import pytest
from tests.push.conftest import Harness, ev
from tests.push.receiver import Receiver, running

from shopcast.push.channels import backoff, sign, verify_signature
from shopcast.push.messages import DeliveryStatus
from shopcast.push.streams import StreamHub

Make = Callable[..., Harness]
SECRET = "whsec-" + "x" * 26


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()
    with running(rec) as url:
        yield rec, url


def hooked(make: Make, url: str, **push: object) -> Harness:
    from shopcast.push.channels import WebhookChannel

    h = make(
        webhooks=[{"name": "crm", "url": url, "secret": SECRET}],
        triggers={"cart_abandonment": {"delay": 1, "channels": ["webhook"]}},
        max_attempts=4,
        **push,
    )
    h.engine.channels["webhook"] = WebhookChannel(h.engine.config, httpx.Client(), h.clock)
    return h


def push_one(h: Harness) -> str:
    h.observe(ev("add_to_cart", "s1"))
    h.clock.advance(1)
    h.engine.tick()
    (d,) = h.engine.outbox.deliveries()
    return d.delivery_id


def test_signed_delivery(harness: Make, receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    h = hooked(harness, url)
    delivery_id = push_one(h)
    report = h.engine.deliver()
    assert report.delivered == 1
    (req,) = rec.requests
    body = req["body"].encode()
    assert req["headers"]["x-shopcast-delivery"] == delivery_id
    assert verify_signature(SECRET, req["headers"]["x-shopcast-signature"], body, now=h.clock())
    assert not verify_signature(
        "wrong" * 4, req["headers"]["x-shopcast-signature"], body, now=h.clock()
    )
    assert not verify_signature(
        SECRET, req["headers"]["x-shopcast-signature"], body + b" ", now=h.clock()
    )
    payload = json.loads(body)
    assert payload["delivery_id"] == delivery_id
    assert payload["message"]["trigger"] == "cart_abandonment"
    assert payload["message"]["channel"] == "webhook"
    assert h.engine.outbox.deliveries()[0].status is DeliveryStatus.DELIVERED
    assert h.engine.deliver().delivered == 0  # never twice


def test_signature_tolerance() -> None:
    header = sign(SECRET, b"{}", 1000)
    assert verify_signature(SECRET, header, b"{}", now=1100)
    assert not verify_signature(SECRET, header, b"{}", now=1000 + 301)
    assert not verify_signature(SECRET, "garbage", b"{}", now=1000)


def test_retries_with_exponential_backoff_keep_the_delivery_id(
    harness: Make, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    rec.statuses = [503, 500]
    h = hooked(harness, url)
    delivery_id = push_one(h)
    assert h.engine.deliver().retried == 1
    first = backoff(h.engine.config, delivery_id, 1)
    assert 4.5 <= first <= 5.5  # retry_base_s = 5, ± 10 %
    h.clock.advance(first - 0.01)
    assert len(rec.requests) == 1 and h.engine.deliver().retried == 0  # not due yet
    h.clock.advance(0.01)
    assert h.engine.deliver().retried == 1
    second = backoff(h.engine.config, delivery_id, 2)
    assert 9 <= second <= 11
    h.clock.advance(second)
    assert h.engine.deliver().delivered == 1
    assert rec.delivery_ids == [delivery_id] * 3  # receivers drop duplicates by it
    (d,) = h.engine.outbox.deliveries()
    assert (d.status, d.attempts) == (DeliveryStatus.DELIVERED, 3)


def test_dead_letter_after_max_attempts_and_requeue(
    harness: Make, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    rec.statuses = [500] * 4
    h = hooked(harness, url)
    delivery_id = push_one(h)
    for _ in range(4):
        h.engine.deliver()
        h.clock.advance(3600)
    (dead,) = h.engine.outbox.deliveries(status=DeliveryStatus.DEAD)
    assert dead.delivery_id == delivery_id
    assert "HTTP 500" in (dead.last_error or "")
    assert h.engine.metrics()["dead_letters"] == 1
    assert h.engine.outbox.requeue(delivery_id, now=h.clock())
    assert h.engine.deliver().delivered == 1
    assert len(rec.requests) == 5


def test_client_error_is_dead_at_once(harness: Make, receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    rec.statuses = [410]
    h = hooked(harness, url)
    push_one(h)
    assert h.engine.deliver().dead == 1
    assert len(rec.requests) == 1


def test_unreachable_receiver_is_retried(harness: Make) -> None:
    h = hooked(harness, "http://127.0.0.1:9/hook")  # the discard port: refused
    push_one(h)
    report = h.engine.deliver()
    assert report.retried == 1
    assert "ConnectError" in report.errors[0]


def test_live_waits_for_a_stream_then_expires(harness: Make) -> None:
    from shopcast.push.channels import LiveChannel

    h = harness(live_ttl="10m", triggers={"cart_abandonment": {"delay": 1}})
    hub = StreamHub()
    h.engine.channels["live"] = LiveChannel(hub, h.engine.config)
    h.observe(ev("add_to_cart", "s1"))
    h.clock.advance(1)
    h.engine.tick()  # nobody is connected: the delivery stays pending

    async def connect_and_receive() -> str:
        sub = hub.subscribe("u1")
        h.engine.connected("u1")  # what the stream routes do on connect
        msg = await asyncio.wait_for(sub.queue.get(), 1)
        hub.unsubscribe(sub)
        return msg.trigger

    assert asyncio.run(connect_and_receive()) == "cart_abandonment"
    (d,) = h.engine.outbox.deliveries()
    assert d.status is DeliveryStatus.DELIVERED
    # a second push nobody receives within the TTL goes to the dead letters
    h.observe(ev("add_to_cart", "s2"))
    h.clock.advance(1)
    h.engine.tick()
    h.clock.advance(601)
    assert h.engine.deliver().dead == 1
