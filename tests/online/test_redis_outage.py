"""Redis goes away and comes back (a redis-server of this test's own, on a free port,
with an append-only file as in production; the shared server is never touched).

While it is down, recommendations still answer (live session read from the durable log,
``degraded: ["live_state"]``) and events are still accepted into the log. When it is
back, the process catches up by itself: stale sessions dropped, the events logged
meanwhile republished on the stream; a worker then counts every event exactly once.
The shop is the SYNTHETIC simulated shop.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from tests.online.conftest import free_port, prepare_shop

from shopcast.online.worker import Worker
from shopcast.simulate import SimulatedShop


class OwnRedis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix=outage:"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        pytest.fail("own redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def wait_for(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"gave up waiting for {what}")


def view(eid: str, user: str, item: str) -> dict[str, str]:
    return {"event_id": eid, "type": "view", "user_id": user, "item_id": item}


def test_redis_outage_degrades_then_catches_up(
    own_redis: OwnRedis, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    from shopcast.api import create_app

    base = prepare_shop(tmp_path, small_shop)
    settings = base.model_copy(
        update={
            "state": base.state.model_copy(
                update={"url": own_redis.url, "retry_s": 0.2, "timeout_s": 0.2}
            ),
            "auth": base.auth.model_copy(update={"enabled": False}),
            "recommend": base.recommend.model_copy(update={"log_impressions": False}),
        }
    )
    items = [i.item_id for i in small_shop.items]
    user = "outage-shopper"
    with TestClient(create_app(settings)) as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        assert client.post("/v1/events", json=view("o1", user, items[0])).status_code == 202
        ok = client.get(f"/v1/users/{user}/recommendations").json()
        assert ok["degraded"] == []
        first = Worker(engine.online, settings, name="before")
        assert first.run(idle_exit_s=0.5).applied == 1

        own_redis.stop()  # ---- Redis is down ----
        for n in range(1, 5):
            posted = client.post("/v1/events", json=view(f"o{n + 1}", user, items[n]))
            assert posted.status_code == 202  # durable in the log all the same
        down = client.get(f"/v1/users/{user}/recommendations")
        assert down.status_code == 200
        body = down.json()
        assert "live_state" in body["degraded"] and body["items"]
        live = engine.sessions.get(f"u:{user}")  # from the log: the outage's events too
        assert live.degraded and list(live.items)[-5:] == items[:5]
        assert engine.store.events.count() == len(small_shop.events) + 5
        assert engine.needs_recovery()
        health = client.get("/v1/health").json()
        assert health["online_state"] == "redis" and health["online_state_available"] is False

        own_redis.start()  # ---- Redis is back (its append-only file kept o1) ----
        wait_for(lambda: not engine.needs_recovery(), "the online state to catch up")
        again = client.get(f"/v1/users/{user}/recommendations").json()
        assert again["degraded"] == []
        live = engine.sessions.get(f"u:{user}")
        assert not live.degraded and list(live.items)[-5:] == items[:5]
        after = Worker(engine.online, settings, name="after")
        stats = after.run(idle_exit_s=0.5)
        assert stats.applied == 4  # the outage's events, o1 was counted before
        weights = settings.recommend.event_weights
        popular = dict(engine.online.counters.popular(1000, days=2))
        assert sum(popular.values()) == 5 * weights["view"]
        assert all(engine.online.counters.applied(f"o{n}") for n in range(1, 6))
