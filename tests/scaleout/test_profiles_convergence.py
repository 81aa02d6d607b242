"""Behavioural profiles and targeting across API processes. The shop is the SYNTHETIC
simulated shop.

What is promised (docs/operations.md, "Profiles and targeting across processes"):

- targeting (``POST /v1/targeting``) reads the shared event log by sequence number at
  every call: an event committed by any process is in the next answer of every other;
- profiles (``GET /v1/users/{id}/profile``, segments) are in each process's memory,
  built from the log at start; with ``state.url = redis://`` every process follows the
  event stream and folds in the events the others ingested (converges in the time Redis
  takes to deliver, milliseconds); with ``memory://`` state another process's profiles
  do not follow (they catch up at its next start).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.online.conftest import serve_processes

from shopcast.api import create_app
from shopcast.config import Settings
from shopcast.domain import Item
from shopcast.ingest.importer import import_events, import_items, import_users
from shopcast.simulate import SimulatedShop
from shopcast.storage import open_store

SHOPPER = "x-process-shopper"


def _load(url: str, shop: SimulatedShop) -> None:
    store = open_store(url)
    try:
        import_items(store, shop.items)
        import_users(store, shop.users)
        import_events(store, shop.events)
    finally:
        store.close()


def _item(shop: SimulatedShop) -> Item:
    return next(i for i in shop.items if i.category and i.price is not None)


def _events(item: Item) -> list[dict[str, Any]]:
    base = {"user_id": SHOPPER, "item_id": item.item_id}
    return [
        {**base, "event_id": "xp-1", "type": "view"},
        {**base, "event_id": "xp-2", "type": "add_to_cart"},
        {**base, "event_id": "xp-3", "type": "purchase", "price": item.price},
    ]


def _targeted(get: Any, item: Item) -> set[str]:
    body = {"category": item.category[0], "limit": 1000, "exclude_buyers": False}
    r = get("/v1/targeting", json=body)
    assert r.status_code == 200, r.text
    return {u["user_id"] for u in r.json()["users"]}


def _funnel(answer: Any) -> tuple[int, int, int] | None:
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    funnel = answer.json()["behaviour"]["funnel"]
    return funnel["views"], funnel["carts"], funnel["purchases"]


@pytest.fixture
def servers(
    postgres_url: str, redis_url: str, tmp_path: Path, small_shop: SimulatedShop
) -> Iterator[list[str]]:
    """Two real ``shopcast serve`` processes on one PostgreSQL database and one Redis."""
    _load(postgres_url, small_shop)
    env = {
        **os.environ,
        "SHOPCAST_DATABASE_URL": postgres_url,
        "SHOPCAST_MODEL_DIR": str(tmp_path / "models"),
        "SHOPCAST_STATE__URL": redis_url,
        "SHOPCAST_AUTH__ENABLED": "false",
        "SHOPCAST_ENVIRONMENT": "test",
        "OPENBLAS_NUM_THREADS": "1",
    }
    with serve_processes(env, tmp_path) as urls:
        yield urls


@pytest.mark.server
def test_two_processes_on_postgresql_and_redis_converge(
    servers: list[str], small_shop: SimulatedShop
) -> None:
    one, two = (httpx.Client(base_url=u, timeout=10) for u in servers)
    item = _item(small_shop)
    assert _funnel(two.get(f"/v1/users/{SHOPPER}/profile")) is None
    assert SHOPPER not in _targeted(two.post, item)
    posted = one.post("/v1/events", json=_events(item))
    assert posted.status_code == 202, posted.text
    # targeting reads the shared log: the very next answer of the other process has it
    assert SHOPPER in _targeted(two.post, item)
    # the profile follows the Redis stream; wait for delivery (a liveness bound, not a
    # speed claim: the figure is printed)
    started = time.monotonic()
    seen = None
    while time.monotonic() - started < 60 and seen != (1, 1, 1):
        seen = _funnel(two.get(f"/v1/users/{SHOPPER}/profile"))
        if seen != (1, 1, 1):
            time.sleep(0.01)
    print(f"profile converged on the other process after {time.monotonic() - started:.3f} s")
    assert seen == (1, 1, 1)
    card = two.get(f"/v1/users/{SHOPPER}/profile").json()
    assert item.item_id in card["behaviour"]["recent"]["bought"]
    assert _funnel(one.get(f"/v1/users/{SHOPPER}/profile")) == (1, 1, 1)  # and its own


def test_without_redis_only_targeting_follows_other_processes(
    postgres_url: str, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    """``memory://`` state: what the docs promise, no more (two app instances)."""
    _load(postgres_url, small_shop)
    settings = Settings(
        environment="test",
        database_url=postgres_url,
        model_dir=tmp_path / "models",
        auth={"enabled": False},
    )
    item = _item(small_shop)
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        assert one.post("/v1/events", json=_events(item)).status_code == 202
        assert SHOPPER in _targeted(two.post, item)  # the shared log
        assert _funnel(one.get(f"/v1/users/{SHOPPER}/profile")) == (1, 1, 1)
        assert _funnel(two.get(f"/v1/users/{SHOPPER}/profile")) is None  # not followed
    with TestClient(create_app(settings)) as restarted:  # built from the log at start
        assert _funnel(restarted.get(f"/v1/users/{SHOPPER}/profile")) == (1, 1, 1)


def test_a_tenants_profiles_converge_too(
    postgres_url: str, redis_url: str, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    """Every tenant's engine follows its own stream (``<prefix><tenant>:``), not only the
    default's: two app instances on PostgreSQL + Redis, a key of tenant ``shop-b``."""
    import psycopg

    from shopcast.privacy.apikeys import open_key_store
    from shopcast.privacy.tenants import tenant_settings
    from shopcast.storage._postgres import split_url, url_schema

    settings = Settings(
        environment="test",
        database_url=postgres_url,
        model_dir=tmp_path / "models",
        state={"url": redis_url},
        auth={"enabled": True, "rate_limit": {"enabled": False}},
    )
    schema = url_schema(tenant_settings(settings, "shop-b").database_url)
    keys = open_key_store(settings)
    headers = {"X-API-Key": keys.create(["admin"], tenant="shop-b")[1]}
    item = small_shop.items[0]
    try:
        with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
            assert one.put(f"/v1/items/{item.item_id}", json=item.model_dump(mode="json"),
                           headers=headers).status_code == 200  # fmt: skip
            assert _funnel(two.get(f"/v1/users/{SHOPPER}/profile", headers=headers)) is None
            posted = one.post("/v1/events", json=_events(item), headers=headers)
            assert posted.status_code == 202, posted.text
            started, seen = time.monotonic(), None
            while time.monotonic() - started < 30 and seen != (1, 1, 1):
                seen = _funnel(two.get(f"/v1/users/{SHOPPER}/profile", headers=headers))
                time.sleep(0.01)
            assert seen == (1, 1, 1)
            default = two.get(f"/v1/users/{SHOPPER}/profile")  # auth on: no key, no data
            assert default.status_code == 401
    finally:
        keys.close()
        with psycopg.connect(split_url(postgres_url)[0], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
