"""The outbox contract: every ``Outbox`` backend passes ``OutboxContract``.

A new backend (PostgreSQL, …) gets the whole suite from a subclass with one fixture::

    class TestPostgresOutbox(OutboxContract):
        durable = True

        @pytest.fixture
        def open_outbox(self, pg_url) -> Callable[[], Outbox]:
            return lambda: PostgresOutbox(pg_url)   # each call opens the SAME outbox

``open_outbox`` returns a callable that opens the backend under test; calling it again
must open the same data (a restart), which the durability tests use when ``durable``.
All times are arguments: nothing here sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from shopcast.push.messages import (
    LIVE,
    WEBHOOK,
    Delivery,
    DeliveryStatus,
    PushItem,
    PushMessage,
    delivery_for,
)
from shopcast.push.outbox import Outbox

T0 = 1_800_000_000.0


def message(
    mid: str, user: str = "u1", *, at: float = T0, channel: str = LIVE, trigger: str = "cart"
) -> PushMessage:
    return PushMessage(
        message_id=mid,
        decision_id=f"dec-{mid}",
        user_id=user,
        trigger=trigger,
        channel=channel,
        title=f"title {mid}",
        body="body",
        items=(PushItem("i1", "Tent", 99.5, "still in your cart"), PushItem("i2")),
        created_at=at,
        priority=3,
        data={"guide": "https://example.test/guide"},
    )


def enqueue(outbox: Outbox, *msgs: PushMessage, target: str = "") -> list[Delivery]:
    deliveries = [delivery_for(m, target) for m in msgs]
    outbox.enqueue(list(msgs), deliveries)
    return deliveries


class OutboxContract:
    durable = False  # True: data survives close + reopen (tests a restart)

    @pytest.fixture
    def open_outbox(self) -> Callable[[], Outbox]:
        raise NotImplementedError("a backend's test class provides open_outbox")

    @pytest.fixture
    def outbox(self, open_outbox: Callable[[], Outbox]) -> Iterator[Outbox]:
        box = open_outbox()
        yield box
        box.close()

    # -- enqueue and reads ------------------------------------------------------

    def test_enqueue_round_trip(self, outbox: Outbox) -> None:
        m = message("m1")
        assert outbox.enqueue([m], [delivery_for(m)]) == 1
        assert outbox.get("m1") == m
        assert outbox.get("nope") is None
        (d,) = outbox.deliveries(message_id="m1")
        assert d.status is DeliveryStatus.PENDING
        assert d.attempts == 0
        assert d.user_id == "u1"

    def test_enqueue_is_idempotent(self, outbox: Outbox) -> None:
        enqueue(outbox, message("m1"))
        assert outbox.enqueue([message("m1")], [delivery_for(message("m1"))]) == 0
        assert len(outbox.deliveries()) == 1
        assert len(outbox.claim(T0)) == 1

    def test_history_newest_first_since_and_limit(self, outbox: Outbox) -> None:
        enqueue(outbox, message("a", at=T0), message("b", at=T0 + 10), message("c", at=T0 + 5))
        enqueue(outbox, message("x", user="u2", at=T0 + 1))
        assert [m.message_id for m in outbox.history("u1")] == ["b", "c", "a"]
        assert [m.message_id for m in outbox.history("u1", since=T0 + 5)] == ["b", "c"]
        assert [m.message_id for m in outbox.history("u1", limit=1)] == ["b"]
        assert outbox.history("nobody") == []

    # -- claims, leases, acks ---------------------------------------------------

    def test_claim_only_due(self, outbox: Outbox) -> None:
        enqueue(outbox, message("now", at=T0), message("later", at=T0 + 60))
        assert [c.message.message_id for c in outbox.claim(T0, lease_s=600)] == ["now"]
        assert [c.message.message_id for c in outbox.claim(T0 + 60)] == ["later"]

    def test_claim_oldest_due_first_and_limit(self, outbox: Outbox) -> None:
        enqueue(outbox, message("b", at=T0 + 2), message("a", at=T0 + 1), message("c", at=T0 + 3))
        claims = outbox.claim(T0 + 10, limit=2)
        assert [c.message.message_id for c in claims] == ["a", "b"]

    def test_lease_blocks_second_claim_until_it_expires(self, outbox: Outbox) -> None:
        enqueue(outbox, message("m1"))
        (first,) = outbox.claim(T0, lease_s=30)
        assert first.delivery.attempts == 1
        assert first.lease_until == T0 + 30
        assert outbox.claim(T0 + 29) == []
        (again,) = outbox.claim(T0 + 30)  # the first deliverer died: lease expired
        assert again.delivery.delivery_id == first.delivery.delivery_id
        assert again.delivery.attempts == 2

    def test_ack_is_final(self, outbox: Outbox) -> None:
        (d,) = enqueue(outbox, message("m1"))
        outbox.claim(T0)
        assert outbox.ack(d.delivery_id, now=T0 + 1) is True
        assert outbox.ack(d.delivery_id, now=T0 + 2) is False
        assert outbox.claim(T0 + 1000) == []
        (stored,) = outbox.deliveries(message_id="m1")
        assert stored.status is DeliveryStatus.DELIVERED
        assert stored.delivered_at == T0 + 1
        assert outbox.ack("unknown", now=T0) is False

    def test_fail_retries_at_the_given_time(self, outbox: Outbox) -> None:
        (d,) = enqueue(outbox, message("m1"))
        outbox.claim(T0, lease_s=300)
        outbox.fail(d.delivery_id, now=T0 + 1, error="HTTP 503", retry_at=T0 + 8)
        assert outbox.claim(T0 + 7) == []
        (c,) = outbox.claim(T0 + 8)  # the lease was released by fail
        assert c.delivery.attempts == 2
        assert c.delivery.last_error == "HTTP 503"

    def test_dead_letters_and_requeue(self, outbox: Outbox) -> None:
        (d,) = enqueue(outbox, message("m1"))
        outbox.claim(T0)
        outbox.fail(d.delivery_id, now=T0 + 1, error="gave up", retry_at=None)
        assert outbox.claim(T0 + 1000) == []
        (dead,) = outbox.deliveries(status=DeliveryStatus.DEAD)
        assert dead.delivery_id == d.delivery_id
        assert dead.last_error == "gave up"
        assert outbox.ack(d.delivery_id, now=T0 + 2) is False
        assert outbox.requeue(d.delivery_id, now=T0 + 50) is True
        assert outbox.requeue(d.delivery_id, now=T0 + 50) is False
        assert outbox.deliveries(status=DeliveryStatus.DEAD) == []
        (c,) = outbox.claim(T0 + 50)
        assert c.delivery.attempts == 1

    def test_claim_filters_by_channel_and_user(self, outbox: Outbox) -> None:
        enqueue(outbox, message("live1", "u1"), message("live2", "u2"))
        enqueue(outbox, message("hook1", "u1", channel=WEBHOOK), target="crm")
        assert [c.message.message_id for c in outbox.claim(T0, channel=WEBHOOK)] == ["hook1"]
        assert [c.message.message_id for c in outbox.claim(T0, channel=LIVE, user_id="u2")] == [
            "live2"
        ]
        assert [c.message.message_id for c in outbox.claim(T0)] == ["live1"]

    def test_one_message_many_targets(self, outbox: Outbox) -> None:
        m = message("m1", channel=WEBHOOK)
        a, b = delivery_for(m, "crm"), delivery_for(m, "sms")
        assert a.delivery_id != b.delivery_id
        outbox.enqueue([m], [a, b])
        assert {c.delivery.target for c in outbox.claim(T0)} == {"crm", "sms"}

    def test_concurrent_claims_never_share_a_delivery(self, outbox: Outbox) -> None:
        enqueue(outbox, *[message(f"m{i}", at=T0 + i * 1e-3) for i in range(200)])
        seen: list[str] = []
        lock = threading.Lock()

        def worker() -> None:
            while True:
                claims = outbox.claim(T0 + 10, limit=7)
                if not claims:
                    return
                with lock:
                    seen.extend(c.delivery.delivery_id for c in claims)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(seen) == 200
        assert len(set(seen)) == 200

    # -- erasure ------------------------------------------------------------------

    def test_delete_user(self, outbox: Outbox) -> None:
        enqueue(outbox, message("a", "u1"), message("b", "u1"), message("c", "u2"))
        assert outbox.delete_user("u1") == 4  # two messages, two deliveries
        assert outbox.history("u1") == []
        assert outbox.get("a") is None
        assert [d.message_id for d in outbox.deliveries()] == ["c"]
        assert [c.message.message_id for c in outbox.claim(T0)] == ["c"]
        assert outbox.delete_user("u1") == 0

    # -- durability (backends that persist) ----------------------------------------

    def test_survives_reopen(self, open_outbox: Callable[[], Outbox]) -> None:
        if not self.durable:
            pytest.skip("in-process backend")
        box = open_outbox()
        (d,) = enqueue(box, message("m1"))
        enqueue(box, message("m2"))
        (first, _) = box.claim(T0, lease_s=60)
        box.ack(first.delivery.delivery_id, now=T0)
        box.close()
        box = open_outbox()
        try:
            assert box.get("m1") == message("m1")
            assert box.claim(T0 + 10) == []  # m2 still leased by the dead process
            (c,) = box.claim(T0 + 60)
            assert c.message.message_id == "m2"
            assert box.deliveries(message_id="m1")[0].status is DeliveryStatus.DELIVERED
            assert d.delivery_id == first.delivery.delivery_id
        finally:
            box.close()

    # -- retention -----------------------------------------------------------------------

    def test_prune_keeps_pending_and_recent(self, outbox: Outbox) -> None:
        done, dead, pending = message("done", at=T0), message("dead", at=T0), message("p", at=T0)
        recent = message("recent", at=T0 + 100)
        (d_done,) = enqueue(outbox, done)
        (d_dead,) = enqueue(outbox, dead)
        enqueue(outbox, pending, recent)
        claims = {c.delivery.delivery_id: c for c in outbox.claim(T0 + 200, lease_s=1000)}
        outbox.ack(d_done.delivery_id, now=T0 + 1)
        outbox.fail(d_dead.delivery_id, now=T0 + 1, error="x", retry_at=None)
        outbox.ack(delivery_for(recent).delivery_id, now=T0 + 101)
        assert len(claims) == 4
        assert outbox.prune(T0 + 50) == 4  # two old finished messages and their deliveries
        assert outbox.get("done") is None and outbox.get("dead") is None
        assert outbox.get("p") is not None  # still pending: kept however old
        assert outbox.get("recent") is not None
        assert outbox.prune(T0 + 50) == 0
