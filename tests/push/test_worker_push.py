"""``shopcast worker`` runs the push triggers when ``push.in_process`` is off: events
taken by an API process that is gone (only the log and the stream have them) still
produce their immediate push, a redelivered batch decides nothing twice, the live push
wakes the API processes through Redis, and the worker's scheduler thread fires timers.
Real Redis (a key prefix per test) and a SQLite store; SYNTHETIC shop."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.online.conftest import prepare_shop

from shopcast.config import Settings
from shopcast.domain import Event, User
from shopcast.online import open_online
from shopcast.online.worker import open_worker, push_handlers
from shopcast.push.engine import push_urls
from shopcast.push.fanout import FanoutListener, LiveFanout
from shopcast.push.outbox import open_outbox
from shopcast.push.worker import WorkerPush
from shopcast.simulate import SimulatedShop
from shopcast.storage import open_store


def _settings(base: Settings, redis_url: str, **push: object) -> Settings:
    return base.model_copy(
        update={
            "state": base.state.model_copy(update={"url": redis_url}),
            "push": base.push.model_validate(
                {
                    "in_process": False,
                    "tick_interval_s": 0.2,
                    "min_gap": 0,
                    "quiet_hours": {"enabled": False},
                    "triggers": {
                        "session_nudge": {"holdout": 0},
                        "cart_abandonment": {"holdout": 0, "delay": "1s"},
                    },
                    **push,
                }
            ),
        }
    )


def _category_items(shop: SimulatedShop) -> list[str]:
    by_leaf: dict[str, list[str]] = {}
    for item in shop.items:
        if item.category:
            by_leaf.setdefault(item.category[-1], []).append(item.item_id)
    return next(ids[:3] for ids in by_leaf.values() if len(ids) >= 4)


def test_in_process_push_adds_no_worker_handler(tmp_path: Path) -> None:
    settings = Settings(environment="test", database_url=f"sqlite:///{tmp_path / 'x.db'}")
    assert settings.push.in_process
    assert push_handlers(settings) == []  # the API processes run the triggers


def test_worker_runs_the_triggers(
    redis_url: str, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    settings = _settings(prepare_shop(tmp_path, small_shop), redis_url)
    user = "worker-shopper"
    store = open_store(settings.database_url)
    store.users.upsert([User(user_id=user, consent={"push": True})])
    now = time.time()
    views = [
        Event(event_id=f"wv{n}", type="view", user_id=user, item_id=item, timestamp=now + n / 10)
        for n, item in enumerate(_category_items(small_shop))
    ]
    store.events.append(views)  # committed by an API process that then died
    store.close()
    online = open_online(settings.state, lambda _s, _n: [], length=5)
    assert online.bus is not None and online.conn is not None
    woken: list[str] = []
    listener = FanoutListener(LiveFanout(online.conn), woken.append).start()
    worker = open_worker(settings, name="w1")
    (handler,) = worker.handlers
    assert isinstance(handler, WorkerPush)
    outbox = open_outbox(push_urls(settings.database_url, settings.push)[0])
    try:
        assert listener.subscribed.wait(10)
        online.bus.publish(views, "api-gone")
        worker.run(idle_exit_s=1.0)
        (msg,) = outbox.history(user)
        assert msg.trigger == "session_nudge" and msg.channel == "live"
        deadline = time.monotonic() + 10
        while user not in woken and time.monotonic() < deadline:
            time.sleep(0.02)
        assert user in woken  # the API process holding the stream is told at once
        # the same events again (republished after an outage, or a dead worker's
        # batch claimed by another): nothing new is decided
        online.bus.publish(views, "api-gone")
        worker.run(idle_exit_s=1.0)
        assert handler.observed == 6
        assert [m.message_id for m in outbox.history(user)] == [msg.message_id]
        # a timer armed by the worker fires from its scheduler thread
        cart = Event(
            event_id="wc1",
            type="add_to_cart",
            user_id=user,
            item_id=views[0].item_id,
            timestamp=time.time(),
        )
        online.bus.publish([cart], "api-gone")
        worker.run(idle_exit_s=1.0)
        deadline = time.monotonic() + 60  # sanity bound: the delay is 1 s, ticks 0.2 s
        while time.monotonic() < deadline:
            if any(m.trigger == "cart_abandonment" for m in outbox.history(user)):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the worker's scheduler did not fire the cart timer")
    finally:
        outbox.close()
        handler.close()
        listener.stop()
        online.close()


def test_api_with_workers_reacts_to_catalog_changes_only(tmp_path: Path) -> None:
    """``push.in_process = false``: the API process leaves events to the workers but
    handles the catalog changes it applies itself (a price drop here)."""
    from fastapi.testclient import TestClient
    from tests.push.test_api import ITEMS, push_settings

    from shopcast.api import create_app

    settings = push_settings(tmp_path, in_process=False, triggers={"price_drop": {"holdout": 0}})
    with TestClient(create_app(settings)) as client:
        assert client.put("/v1/items", json=ITEMS).status_code < 300
        users = [{"user_id": "u1", "consent": {"push": True}}]
        assert client.put("/v1/users", json=users).status_code < 300
        for item in ("s1", "s2", "s3"):  # a session nudge, were events observed here
            r = client.post("/v1/events", json={"type": "view", "user_id": "u1", "item_id": item})
            assert r.status_code == 202
        assert client.get("/v1/users/u1/push").json()["messages"] == []
        (push,) = client.app.state.push.engines()  # type: ignore[attr-defined]
        push.state.add_interest([("s1", "u1", "view", time.time())])  # as a worker records
        cheaper = {**ITEMS[1], "price": ITEMS[1]["price"] / 2}
        assert cheaper["item_id"] == "s1"
        assert client.put("/v1/items", json=[cheaper]).status_code < 300
        (msg,) = client.get("/v1/users/u1/push").json()["messages"]
        assert msg["trigger"] == "price_drop"


WORKER_CONFIG = """
[push]
in_process = false
min_gap = 0
tick_interval_s = 0.5
[push.quiet_hours]
enabled = false
[push.triggers.session_nudge]
holdout = 0
"""


@pytest.mark.server
def test_push_survives_the_api_process_killed_after_the_202(
    redis_url: str, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    """Real processes: ``shopcast serve`` takes three views and is SIGKILLed right after
    the last 202; ``shopcast worker`` still decides the session nudge from the stream."""
    import os
    import signal
    import subprocess
    import sys

    import httpx
    from tests.online.conftest import free_port, wait_healthy

    settings = prepare_shop(tmp_path, small_shop)
    config = tmp_path / "shopcast.toml"
    config.write_text(WORKER_CONFIG)
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
    port = free_port()
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    api = subprocess.Popen(
        [sys.executable, "-m", "shopcast.cli", "serve", "--port", str(port)],
        env=env,
        stdout=api_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    worker = None
    user = "crash-shopper"
    outbox = open_outbox(push_urls(settings.database_url, settings.push)[0])
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, api, api_log)
        with httpx.Client(timeout=30) as http:
            r = http.put(f"{url}/v1/users", json=[{"user_id": user, "consent": {"push": True}}])
            assert r.status_code < 300, r.text
            for item in _category_items(small_shop):
                r = http.post(
                    f"{url}/v1/events", json={"type": "view", "user_id": user, "item_id": item}
                )
                assert r.status_code == 202, r.text
        api.send_signal(signal.SIGKILL)  # the API process dies right after the 202
        api.wait(10)
        assert outbox.history(user) == []  # it decided nothing itself
        worker = subprocess.Popen(
            [sys.executable, "-m", "shopcast.cli", "worker", "--name", "w1"],
            env=env,
            stdout=worker_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120  # sanity bound (the worker loads the model)
        while not outbox.history(user):
            if worker.poll() is not None:
                pytest.fail(f"worker exited: {worker_log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, worker_log.read_text()[-3000:]
            time.sleep(0.2)
        (msg,) = outbox.history(user)
        assert msg.trigger == "session_nudge" and msg.channel == "live"
    finally:
        outbox.close()
        if api.poll() is None:
            api.kill()
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
