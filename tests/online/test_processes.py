"""Two real API processes (``shopcast serve`` on free ports) sharing real Redis and one
SQLite log and model directory. The shop is the SYNTHETIC simulated shop.

- an event posted to process 1 is reflected by the very next recommendation answered
  by process 2 (the live session is in Redis, written before the 202);
- a model promoted once (``shopcast models promote``) is served by both processes,
  announced on Redis pub/sub (their CURRENT polling is set to an hour here).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.online.conftest import prepare_shop, serve_processes

from shopcast.config import Settings
from shopcast.simulate import SimulatedShop


@dataclass
class Cluster:
    env: dict[str, str]
    urls: list[str]
    settings: Settings


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path, small_shop: SimulatedShop) -> Iterator[Cluster]:
    settings = prepare_shop(tmp_path, small_shop)
    env = {
        **os.environ,
        "SHOPCAST_DATABASE_URL": settings.database_url,
        "SHOPCAST_MODEL_DIR": str(settings.model_dir),
        "SHOPCAST_STATE__URL": redis_url,
        "SHOPCAST_AUTH__ENABLED": "false",
        "SHOPCAST_ENVIRONMENT": "test",
        "SHOPCAST_API__RELOAD_INTERVAL_S": "3600",  # only the Redis announcement swaps
        "OPENBLAS_NUM_THREADS": "1",
    }
    with serve_processes(env, tmp_path) as urls:
        yield Cluster(env, urls, settings)


def recs(url: str, user: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/users/{user}/recommendations", params={"k": 10}, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_event_on_one_process_reflected_by_the_other(
    cluster: Cluster, small_shop: SimulatedShop
) -> None:
    one, two = cluster.urls
    cold = {i["item_id"] for i in recs(two, "nobody-yet")["items"]}
    anchor = neighbour = None
    for item in small_shop.items:
        r = httpx.get(f"{two}/v1/items/{item.item_id}/similar", params={"k": 1}, timeout=10)
        found = r.json().get("items", []) if r.status_code == 200 else []
        if found and found[0]["source"] == "covisit" and found[0]["item_id"] not in cold:
            anchor, neighbour = item.item_id, found[0]["item_id"]
            break
    assert anchor is not None, "no item with a co-visited neighbour outside the cold start"
    user = "fresh-shopper"
    assert neighbour not in {i["item_id"] for i in recs(two, user)["items"]}
    posted = httpx.post(
        f"{one}/v1/events",
        json={"event_id": "x-proc-1", "type": "view", "user_id": user, "item_id": anchor},
        timeout=10,
    )
    assert posted.status_code == 202, posted.text
    answer = recs(two, user)  # the very next request, on the other process
    assert neighbour in {i["item_id"] for i in answer["items"]}
    assert answer["degraded"] == []


def test_promotion_reaches_every_process(cluster: Cluster) -> None:
    from shopcast.storage import open_store
    from shopcast.training.bundle import save_bundle, train_bundle

    before = {httpx.get(f"{u}/v1/health").json()["model_version"] for u in cluster.urls}
    assert len(before) == 1
    store = open_store(cluster.settings.database_url)
    bundle = train_bundle(store, cluster.settings.recommend)
    store.close()
    save_bundle(bundle, cluster.settings.model_dir, promote=False)
    assert bundle.version not in before
    done = subprocess.run(
        [sys.executable, "-m", "shopcast.cli", "models", "promote", bundle.version],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 60
    serving: set[str] = set()
    while time.monotonic() < deadline:
        serving = {httpx.get(f"{u}/v1/health").json()["model_version"] for u in cluster.urls}
        if serving == {bundle.version}:
            break
        time.sleep(0.1)
    assert serving == {bundle.version}
