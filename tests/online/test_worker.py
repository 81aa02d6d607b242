"""The event bus and ``shopcast worker`` against real Redis (SYNTHETIC events).

The kill test runs real worker processes: one is killed with SIGKILL in the middle of
the stream, another claims what it left pending; the counters are then checked
exactly against the events published (nothing lost, nothing applied twice).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from shopcast.config import Settings, StateSettings
from shopcast.domain import Event
from shopcast.online import OnlineState, open_online
from shopcast.online.worker import Worker

DAY = 86_400.0 * 20_000


def events(n: int, *, subjects: int = 40, items: int = 30) -> list[Event]:
    return [
        Event(
            event_id=f"k{i}",
            type="add_to_cart" if i % 7 == 0 else "view",
            user_id=f"u{i % subjects}",
            item_id=f"i{(i * 13) % items}",
            timestamp=DAY + i,
        )
        for i in range(n)
    ]


def expected_popularity(evs: list[Event]) -> dict[str, float]:
    weights = Settings().recommend.event_weights
    out: dict[str, float] = defaultdict(float)
    for e in evs:
        assert e.item_id is not None
        out[e.item_id] += weights[e.type.value]
    return dict(out)


def state_of(url: str) -> OnlineState:
    return open_online(StateSettings(url=url), lambda _s, _n: [], length=5)


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.02)
    pytest.fail(f"gave up waiting for {what}")


def test_redelivery_is_applied_once(redis_url: str) -> None:
    state = state_of(redis_url)
    assert state.bus is not None
    evs = events(50)
    state.bus.publish(evs, "test")
    state.bus.publish(evs[:20], "test")  # an API process republishing after an outage
    worker = Worker(state, Settings(), name="w1", batch=16)
    stats = worker.run(idle_exit_s=0.5)
    assert stats.messages == 70
    assert stats.applied == 50 and stats.duplicates == 20
    assert dict(state.counters.popular(100, now=DAY)) == expected_popularity(evs)
    assert state.bus.backlog() == {"pending": 0, "lag": 0}
    state.close()


def test_claim_takes_over_a_dead_consumers_pending(redis_url: str) -> None:
    state = state_of(redis_url)
    assert state.bus is not None and state.conn is not None
    evs = events(30)
    state.bus.publish(evs, "test")
    state.bus.ensure_group()
    client = state.conn.blocking_client(1.0)
    taken = state.bus.read(client, "shopcast-workers", "dead", count=10, block_ms=100)
    assert len(taken) == 10  # delivered to "dead", never acknowledged
    assert state.bus.consumers() == {"dead": 10}
    time.sleep(0.05)
    worker = Worker(state, Settings(), name="alive", claim_idle_ms=20)
    stats = worker.run(idle_exit_s=0.5)
    assert stats.claimed == 10 and stats.applied == 30
    assert state.bus.backlog() == {"pending": 0, "lag": 0}
    assert dict(state.counters.popular(100, now=DAY)) == expected_popularity(evs)
    client.close()
    state.close()


def _worker(redis_url: str, name: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SHOPCAST_STATE__URL": redis_url,
        "SHOPCAST_WORKER_THROTTLE_S": "0.002",  # 2 ms per event: slow enough to kill mid-way
        "OPENBLAS_NUM_THREADS": "1",
    }
    log = (tmp_path / f"{name}.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shopcast.cli",
            "worker",
            "--name",
            name,
            "--batch",
            "25",
            "--claim-idle-ms",
            "300",
            "--tenant",  # only the default stream (a key file in the working directory
            "default",  # would add its tenants' workers and their "0 claimed" lines)
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(
    redis_url: str, tmp_path: Path
) -> None:
    state = state_of(redis_url)
    assert state.bus is not None
    evs = events(2000)
    state.bus.publish(evs, "test")
    a = _worker(redis_url, "A", tmp_path)
    b = _worker(redis_url, "B", tmp_path)
    try:
        wait_for(lambda: state.counters.get("worker:A:applied") >= 200, 120, "worker A to work")
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        left = state.bus.consumers().get("A", 0)
        assert left > 0, "A was killed between batches: nothing pending to claim"
        wait_for(lambda: state.bus.backlog() == {"pending": 0, "lag": 0}, 180, "the stream drained")
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(10)
    out_b = (tmp_path / "B.log").read_text()
    assert "claimed" in out_b and " 0 claimed" not in out_b, out_b
    assert state.bus.consumers().get("A", 0) == 0  # B took every message A left
    # exactly once in effect: every event counted, none twice
    assert dict(state.counters.popular(1000, now=DAY)) == expected_popularity(evs)
    applied = state.counters.get("worker:A:applied") + state.counters.get("worker:B:applied")
    assert applied == len(evs)
    assert state.counters.get("worker:B:applied") > 0
    assert all(state.counters.applied(e.event_id or "") for e in evs[::97])
    state.close()
