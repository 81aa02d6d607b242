"""Webhooks go out concurrently (``push.dispatch``): a slow receiver does not delay a
fast one; parallelism is bounded overall and per endpoint; a delivery whose lease ran
out while it waited is not sent. Real local HTTP receivers; SYNTHETIC data. Nothing
here asserts wall time: the slow receiver blocks until it sees the fast endpoint's
deliveries acknowledged (or gives up after a sanity timeout)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from tests.push.conftest import Harness, consenting, ev
from tests.push.receiver import Receiver, running

from shopcast.push.channels import WebhookChannel
from shopcast.push.dispatch import lanes
from shopcast.push.messages import DeliveryStatus

Make = Callable[..., Harness]
SECRET = "whsec-" + "y" * 26


class Gated(Receiver):
    """A receiver that holds each request until ``gate`` is set (at most ``wait_s``),
    recording whether the gate was open when it answered and the most requests it
    held at once."""

    def __init__(self, wait_s: float = 20.0) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.wait_s = wait_s
        self.opened: list[bool] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._count = threading.Lock()

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        with self._count:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.opened.append(self.gate.wait(self.wait_s))
        finally:
            with self._count:
                self.in_flight -= 1
        return super().handle(headers, body)


@pytest.fixture
def receivers() -> Iterator[tuple[Gated, str, Receiver, str]]:
    slow, fast = Gated(), Receiver()
    with running(slow) as slow_url, running(fast) as fast_url:
        yield slow, slow_url, fast, fast_url


def hooked(make: Make, users: list[str], hooks: list[dict[str, Any]], **push: Any) -> Harness:
    push.setdefault("triggers", {"cart_abandonment": {"delay": 1, "channels": ["webhook"]}})
    h = make(
        users=consenting(*users),
        webhooks=[{"secret": SECRET, **hook} for hook in hooks],
        **push,
    )
    h.engine.channels["webhook"] = WebhookChannel(h.engine.config, httpx.Client(), h.clock)
    return h


def decide(h: Harness, users: list[str]) -> None:
    for user in users:
        h.observe(ev("add_to_cart", "s1", user=user))
    h.clock.advance(1)
    h.engine.tick()


def test_slow_receiver_does_not_delay_a_fast_one(
    harness: Make, receivers: tuple[Gated, str, Receiver, str]
) -> None:
    slow, slow_url, fast, fast_url = receivers
    users = ["u1", "u2", "u3"]
    h = hooked(
        harness,
        users,
        [{"name": "slow", "url": slow_url, "timeout_s": 30}, {"name": "fast", "url": fast_url}],
        webhook_concurrency=4,
        webhook_per_endpoint=2,
    )
    decide(h, users)
    pending = h.engine.outbox.deliveries()
    assert sorted(d.target for d in pending) == ["fast"] * 3 + ["slow"] * 3
    acked: list[str] = []
    real_ack = h.engine.outbox.ack
    targets = {d.delivery_id: d.target for d in pending}

    def ack(delivery_id: str, *, now: float) -> bool:
        ok = real_ack(delivery_id, now=now)
        acked.append(targets[delivery_id])
        if acked.count("fast") == 3:
            slow.gate.set()  # every fast delivery is acked: let the slow receiver answer
        return ok

    h.engine.outbox.ack = ack  # type: ignore[method-assign]
    report = h.engine.deliver()
    assert report.delivered == 6
    # the slow receiver answered only after all three fast deliveries were acked:
    # nothing to the fast endpoint waited behind it (sequential sends would time out here)
    assert slow.opened == [True, True, True]
    assert acked[:3] == ["fast"] * 3 and acked[3:] == ["slow"] * 3
    assert slow.max_in_flight <= 2  # push.webhook_per_endpoint
    assert {d.status for d in h.engine.outbox.deliveries()} == {DeliveryStatus.DELIVERED}
    assert sorted(fast.delivery_ids) == sorted(i for i, t in targets.items() if t == "fast")


def test_parallelism_is_bounded_per_endpoint(
    harness: Make, receivers: tuple[Gated, str, Receiver, str]
) -> None:
    slow, slow_url, _, _ = receivers
    slow.wait_s = 0.3  # each request is held a moment so that the lanes overlap
    users = ["u1", "u2", "u3", "u4", "u5"]
    h = hooked(
        harness,
        users,
        [{"name": "slow", "url": slow_url, "timeout_s": 30}],
        webhook_concurrency=8,
        webhook_per_endpoint=2,
    )
    decide(h, users)
    report = h.engine.deliver()
    assert report.delivered == 5
    assert slow.max_in_flight == 2
    assert len(set(slow.delivery_ids)) == 5


def test_a_lapsed_lease_is_not_sent(
    harness: Make, receivers: tuple[Gated, str, Receiver, str]
) -> None:
    slow, slow_url, _, _ = receivers
    slow.wait_s = 1.5  # longer than the lease: the second delivery's lease runs out
    users = ["u1", "u2"]
    h = hooked(
        harness,
        users,
        [{"name": "slow", "url": slow_url, "timeout_s": 30}],
        webhook_concurrency=1,
        webhook_per_endpoint=1,
        lease_s=1.0,
    )
    decide(h, users)
    report = h.engine.deliver()
    assert report.delivered == 1 and len(slow.requests) == 1
    left = [d for d in h.engine.outbox.deliveries() if d.status is DeliveryStatus.PENDING]
    assert len(left) == 1  # not sent, still pending: the next claim (after its lease) sends it
    slow.gate.set()
    assert h.engine.deliver(h.clock.advance(2)).delivered == 1
    assert len(set(slow.delivery_ids)) == 2


def test_lanes_round_robin_over_endpoints() -> None:
    items = [("a", 1), ("a", 2), ("a", 3), ("b", 4), ("a", 5)]
    got = lanes(items, key=lambda x: x[0], per_key=2)
    assert got == [[("a", 1), ("a", 3)], [("b", 4)], [("a", 2), ("a", 5)]]
    assert lanes([], key=str, per_key=3) == []


def test_a_slow_webhook_does_not_hold_up_the_timers(
    harness: Make, receivers: tuple[Gated, str, Receiver, str]
) -> None:
    """The scheduler sends webhooks from a loop of their own: while a webhook is held
    by a slow receiver, a timer that comes due still fires and its live push goes out."""
    from shopcast.push.scheduler import run_blocking

    slow, slow_url, _, _ = receivers
    slow.wait_s = 30.0  # held until the test opens the gate
    h = hooked(
        harness,
        ["u1", "u2"],
        [{"name": "slow", "url": slow_url, "timeout_s": 60}],
        triggers={"cart_abandonment": {"delay": 1, "channels": ["live", "webhook"]}},
    )
    decide(h, ["u1"])  # u1: a live push (sent) and a webhook (pending)
    assert [m.user_id for m in h.live.messages] == ["u1"]
    stop = threading.Event()
    loop = threading.Thread(target=run_blocking, args=(h.engine, 0.02, stop), daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 20
        while slow.in_flight == 0:  # the webhook to u1 is being sent, and held
            assert time.monotonic() < deadline, "the webhook was not sent"
            time.sleep(0.01)
        h.observe(ev("add_to_cart", "s2", user="u2"))
        h.clock.advance(1)  # u2's timer comes due while the webhook is still held
        deadline = time.monotonic() + 15
        while [m.user_id for m in h.live.messages] != ["u1", "u2"]:
            assert time.monotonic() < deadline, "the timer waited for the slow webhook"
            time.sleep(0.01)
        assert slow.opened == [] and slow.in_flight == 1  # still held meanwhile
    finally:
        slow.gate.set()
        stop.set()
        loop.join(timeout=60)
    assert slow.opened and slow.opened[0] is True
