"""Live pushes across API processes through Redis pub/sub (``push.fanout``).

Two real ``shopcast serve`` processes share real Redis (a unique key prefix) and one
SQLite store; the shop is the SYNTHETIC simulated shop. A shopper's SSE stream is open
on process B; three views in one category are posted to process A, whose session
nudge decides a live push. B's poller cannot be what delivers it (``live_retry_s``
and ``tick_interval_s`` are an hour here): A leaves the delivery pending in the
outbox and publishes a wake-up, B claims the delivery and sends it on the stream.
The latency is printed (freshness target: a second), not asserted.

Also in process, with a real Redis: a wake-up makes the engine holding the stream
claim and ack the delivery once, and a second wake-up (or the poller) sends nothing
again.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.online.conftest import prepare_shop, serve_processes
from tests.push.conftest import T0, Clock, FakeItems, catalog, consenting, ev, push_settings

from shopcast.push.attribution import Attribution
from shopcast.push.engine import PushEngine
from shopcast.push.fanout import FanoutListener, LiveFanout
from shopcast.push.messages import LIVE, DeliveryStatus
from shopcast.push.outbox import open_outbox
from shopcast.push.state import PushState
from shopcast.push.streams import StreamHub
from shopcast.simulate import SimulatedShop

CONFIG = """
[push]
min_gap = 0
tick_interval_s = 3600
live_retry_s = 3600
[push.quiet_hours]
enabled = false
[push.triggers.session_nudge]
holdout = 0
"""


def _redis(url: str) -> tuple[object, str]:
    import redis

    from shopcast.online._redis import split_url

    base, prefix = split_url(url)
    return redis.Redis.from_url(base, decode_responses=True), prefix


@pytest.fixture
def two_servers(
    redis_url: str, tmp_path: Path, small_shop: SimulatedShop
) -> Iterator[tuple[str, str]]:
    settings = prepare_shop(tmp_path, small_shop)
    config = tmp_path / "shopcast.toml"
    config.write_text(CONFIG)
    env = {
        **os.environ,
        "SHOPCAST_CONFIG": str(config),
        "SHOPCAST_DATABASE_URL": settings.database_url,
        "SHOPCAST_MODEL_DIR": str(settings.model_dir),
        "SHOPCAST_STATE__URL": redis_url,
        "SHOPCAST_AUTH__ENABLED": "false",
        "SHOPCAST_ENVIRONMENT": "test",
        "OPENBLAS_NUM_THREADS": "1",
    }
    with serve_processes(env, tmp_path) as urls:
        client, prefix = _redis(redis_url)
        deadline = time.monotonic() + 30
        while dict(client.pubsub_numsub(f"{prefix}push:live")).get(f"{prefix}push:live", 0) < 2:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the processes did not subscribe"
            time.sleep(0.05)
        client.close()  # type: ignore[attr-defined]
        yield urls[0], urls[1]


def _read(
    url: str,
    user: str,
    lines: queue.Queue[tuple[float, str]],
    ready: threading.Event,
    stop: threading.Event,
) -> None:
    with (
        httpx.Client(timeout=httpx.Timeout(30, read=60)) as http,
        http.stream("GET", f"{url}/v1/users/{user}/stream") as response,
    ):
        for line in response.iter_lines():
            if line == ": connected":
                ready.set()
            lines.put((time.perf_counter(), line))
            if stop.is_set():
                return


def _three_in_one_category(shop: SimulatedShop) -> list[str]:
    by_leaf: dict[str, list[str]] = {}
    for item in shop.items:
        if item.category:
            by_leaf.setdefault(item.category[-1], []).append(item.item_id)
    return next(ids[:3] for ids in by_leaf.values() if len(ids) >= 4)


@pytest.mark.server
def test_push_decided_on_a_reaches_a_stream_on_b(
    two_servers: tuple[str, str], small_shop: SimulatedShop
) -> None:
    a, b = two_servers
    user = "fanout-shopper"
    with httpx.Client(timeout=30) as http:
        r = http.put(f"{a}/v1/users", json=[{"user_id": user, "consent": {"push": True}}])
        assert r.status_code < 300, r.text
    lines: queue.Queue[tuple[float, str]] = queue.Queue()
    ready, stop = threading.Event(), threading.Event()
    reader = threading.Thread(target=_read, args=(b, user, lines, ready, stop), daemon=True)
    reader.start()
    assert ready.wait(30), "the stream on B did not open"
    first, second, third = _three_in_one_category(small_shop)
    with httpx.Client(timeout=30) as http:
        for item in (first, second):
            r = http.post(f"{a}/v1/events", json={"type": "view", "user_id": user, "item_id": item})
            assert r.status_code == 202, r.text
        sent = time.perf_counter()
        r = http.post(f"{a}/v1/events", json={"type": "view", "user_id": user, "item_id": third})
        assert r.status_code == 202, r.text
    data = None
    at = sent
    deadline = time.monotonic() + 30  # a sanity bound, not the freshness target
    while data is None:
        at, line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line.startswith("data: "):
            data = json.loads(line[len("data: ") :])
    print(
        f"\nlive push decided on A reached the SSE stream on B {1000 * (at - sent):.1f} ms "
        "after the triggering event was posted"
    )
    assert data["trigger"] == "session_nudge" and data["user_id"] == user
    with httpx.Client(timeout=30) as http:
        messages = http.get(f"{a}/v1/users/{user}/push").json()["messages"]
    (msg,) = messages
    assert msg["message_id"] == data["message_id"]
    (delivery,) = msg["deliveries"]
    assert delivery["status"] == "delivered"
    # A tried it first (no stream there), then B's claim sent it: two attempts, one ack.
    assert delivery["attempts"] == 2
    # no second copy on the stream (B's stream sees only heartbeats afterwards)
    time.sleep(1.5)
    stop.set()
    rest = []
    while not lines.empty():
        rest.append(lines.get_nowait()[1])
    assert not [x for x in rest if x.startswith("data: ")]


def test_wakeup_claims_and_acks_once(redis_url: str) -> None:
    """Two engines on one outbox: A (no stream) decides, B (holds the stream) is woken
    through real Redis pub/sub and sends it; nothing is sent twice afterwards."""
    from shopcast.online._redis import RedisConnection

    settings = push_settings()
    outbox = open_outbox("memory://")
    state = PushState("sqlite://:memory:")
    journal = Attribution("sqlite://:memory:")
    clock = Clock()
    conn = RedisConnection(redis_url, timeout_s=2.0)
    hub_a, hub_b = StreamHub(), StreamHub()
    items = FakeItems(catalog())
    users = consenting("u1").get

    def engine(hub: StreamHub) -> PushEngine:
        return PushEngine(
            settings,
            outbox=outbox,
            state=state,
            journal=journal,
            items=items,
            users=users,
            clock=clock,
            hub=hub,
            fanout=LiveFanout(conn),
        )

    a, b = engine(hub_a), engine(hub_b)
    woken: list[str] = []
    got: queue.Queue[object] = queue.Queue()

    def on_user(user: str) -> None:
        woken.append(user)
        got.put(b.wake(user))

    listener = FanoutListener(LiveFanout(conn), on_user).start()
    try:
        assert listener.subscribed.wait(10)
        loop_ready = threading.Event()
        import asyncio

        received: list[str] = []

        async def hold_stream() -> None:
            sub = hub_b.subscribe("u1")
            loop_ready.set()
            msg = await asyncio.wait_for(sub.queue.get(), timeout=20)
            received.append(msg.message_id)
            await asyncio.sleep(0.5)  # anything sent twice would arrive meanwhile
            while not sub.queue.empty():
                received.append(sub.queue.get_nowait().message_id)

        holder = threading.Thread(target=lambda: asyncio.run(hold_stream()), daemon=True)
        holder.start()
        assert loop_ready.wait(10)
        verdicts = a.observe([ev("view", i, ts=T0) for i in ("s0", "s1", "s2")])
        assert [(v.candidate.trigger, v.outcome) for v in verdicts] == [("session_nudge", "sent")]
        report = got.get(timeout=20)
        holder.join(timeout=30)
        assert woken == ["u1"]
        assert getattr(report, "delivered", 0) == 1
        assert len(received) == 1
        (d,) = [x for x in outbox.deliveries() if x.channel == LIVE]
        assert d.status is DeliveryStatus.DELIVERED and d.attempts == 2
        # the poller and another wake-up find nothing left to send
        assert a.deliver(clock.advance(3600), channel=LIVE).delivered == 0
        assert b.wake("u1").delivered == 0
        assert Counter(received) == Counter({d.message_id: 1})
    finally:
        listener.stop()
        a.channels.clear()
        b.channels.clear()
        outbox.close()
        state.close()
        journal.close()
        conn.close()


def test_wakeup_only_on_the_first_attempt() -> None:
    """A live push nobody holds a stream for wakes the other processes once, when it is
    decided; the pollers' later retries publish nothing (no Redis traffic per retry)."""

    class Notes:
        def __init__(self) -> None:
            self.calls: list[list[str]] = []

        def notify(self, users: object) -> int:
            self.calls.append(sorted(users))  # type: ignore[call-overload]
            return 0

    notes = Notes()
    clock = Clock()
    engine = PushEngine(
        push_settings(),
        outbox=open_outbox("memory://"),
        state=PushState("sqlite://:memory:"),
        journal=Attribution("sqlite://:memory:"),
        items=FakeItems(catalog()),
        users=consenting("u1").get,
        clock=clock,
        hub=StreamHub(),
        fanout=notes,  # type: ignore[arg-type]
    )
    try:
        engine.observe([ev("view", i, ts=T0) for i in ("s0", "s1", "s2")])
        assert notes.calls == [["u1"]]
        for _ in range(3):  # the poller retries every live_retry_s: no stream anywhere
            assert engine.deliver(clock.advance(2.0), channel=LIVE).retried == 1
        assert notes.calls == [["u1"]]
    finally:
        engine.close()
