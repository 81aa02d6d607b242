"""The push API over a real store and serving engine (SYNTHETIC catalog and events)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shopcast.config import Settings

ITEMS = [
    {
        "item_id": f"{c[0].lower()}{n}",
        "title": f"{c} {n}",
        "category": ["Shop", c],
        "price": 10.0 + n,
        "stock": 5,
    }
    for c in ("Shoes", "Tents", "Coffee")
    for n in range(6)
]


def push_settings(tmp_path: Path, **push: Any) -> Settings:
    base: dict[str, Any] = {
        "quiet_hours": {"enabled": False},
        "min_gap": 0,
        "tick_interval_s": 3600,  # the tests tick by hand
        "triggers": {"session_nudge": {"holdout": 0}, "cart_abandonment": {"holdout": 0}},
    }
    base.update(push)
    return Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "models",
        auth={"enabled": False},
        push=base,
    )


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    from shopcast.api import create_app

    with TestClient(create_app(push_settings(tmp_path))) as client:
        assert client.put("/v1/items", json=ITEMS).status_code < 300
        users = [{"user_id": u, "consent": {"push": True}} for u in ("u1", "u2")]
        assert client.put("/v1/users", json=users).status_code < 300
        yield client


def views(client: TestClient, user: str, *items: str) -> None:
    for item in items:
        r = client.post("/v1/events", json={"type": "view", "user_id": user, "item_id": item})
        assert r.status_code == 202, r.text


def test_event_to_push_history_feedback_and_metrics(api: TestClient) -> None:
    views(api, "u1", "s1", "s2", "s3")  # intent: three views in Shoes
    history = api.get("/v1/users/u1/push").json()["messages"]
    (msg,) = history
    assert msg["trigger"] == "session_nudge"
    assert msg["channel"] == "live"
    assert msg["user_id"] == "u1"
    assert msg["items"] and {"item_id", "title", "price", "reason"} <= set(msg["items"][0])
    assert msg["deliveries"][0]["status"] == "pending"  # no stream open: it waits
    mid = msg["message_id"]
    assert api.post(f"/v1/push/{mid}/open").json()["recorded"] is True
    assert api.post(f"/v1/push/{mid}/open").json()["recorded"] is False
    assert api.post(f"/v1/push/{mid}/click").json()["recorded"] is True
    assert api.post("/v1/push/nope/click").status_code == 404
    bought = msg["items"][0]["item_id"]
    r = api.post("/v1/events", json={"type": "purchase", "user_id": "u1", "item_id": bought})
    assert r.status_code == 202
    m = api.get("/v1/push/metrics").json()
    nudge = m["triggers"]["session_nudge"]
    assert nudge["sent"] == 1
    assert nudge["channels"]["live"] == {
        "messages": 1,
        "delivered": 0,
        "opened": 1,
        "clicked": 1,
        "purchases": 1,
        "click_purchases": 1,
        "open_rate": 1.0,
        "click_rate": 1.0,
    }
    assert nudge["lift"]["sent_conversions"] == 1


def test_trigger_configuration_api(api: TestClient) -> None:
    r = api.put("/v1/push/triggers/cart_abandonment", json={"delay": "not a duration"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "delay"
    assert api.put("/v1/push/triggers/nope", json={}).status_code == 404
    r = api.put("/v1/push/triggers/cart_abandonment", json={"delay": "2s"})
    assert r.status_code == 200 and r.json()["delay"] == 2.0
    assert api.get("/v1/push/triggers").json()["cart_abandonment"]["delay"] == 2.0


def test_price_drop_through_the_catalog_api(api: TestClient) -> None:
    views(api, "u2", "t4")
    r = api.put("/v1/items/t4", json={**ITEMS[10], "price": 5.0})
    assert r.status_code < 300, r.text
    (msg,) = api.get("/v1/users/u2/push").json()["messages"]
    assert msg["trigger"] == "price_drop"
    assert msg["items"][0]["item_id"] == "t4"


def test_erasure_removes_push_history_and_outbox(api: TestClient) -> None:
    views(api, "u1", "c1", "c2", "c3")
    api.post("/v1/events", json={"type": "add_to_cart", "user_id": "u1", "item_id": "c1"})
    assert api.get("/v1/users/u1/push").json()["messages"]
    r = api.delete("/v1/users/u1")
    assert r.status_code == 200, r.text
    removed = r.json()["removed"]
    assert removed["push_outbox"] >= 2  # the message and its delivery
    assert removed["push_history"] >= 2  # the decision, the sent row, timers, interest
    assert api.get("/v1/users/u1/push").json()["messages"] == []
    assert api.get("/v1/push/metrics").json()["totals"]["decisions"] == 0


def test_promotion_run_unknown_is_404(api: TestClient) -> None:
    assert api.post("/v1/push/promotions/none/run").status_code == 404


def test_websocket_stream(api: TestClient) -> None:
    with api.websocket_connect("/v1/users/u2/stream/ws") as ws:
        views(api, "u2", "s1", "s2", "s3")
        frame = ws.receive_json()
    assert frame["event"] == "push"
    assert frame["data"]["trigger"] == "session_nudge"
    assert frame["data"]["user_id"] == "u2"


def test_websocket_at_the_sse_path(api: TestClient) -> None:
    views(api, "u1", "t1", "t2", "t3")  # decided while nobody listens
    with api.websocket_connect("/v1/users/u1/stream") as ws:
        frame = ws.receive_json()  # sent on connect
    assert frame["data"]["trigger"] == "session_nudge"


def test_promotion_through_the_targeting_api(tmp_path: Path) -> None:
    from shopcast.api import create_app

    promo = {
        "promotion_id": "coffee-week",
        "title": "Coffee week",
        "body": "Code {coupon}",
        "coupon": "BEANS",
        "category": "Coffee",
    }
    settings = push_settings(
        tmp_path, promotions=[promo], triggers={"promotion": {"holdout": 0, "min_score": 0.0}}
    )
    with TestClient(create_app(settings)) as api:
        api.put("/v1/items", json=ITEMS)
        users = [{"user_id": u, "consent": {"push": True}} for u in ("fan", "other")]
        api.put("/v1/users", json=users)
        for item in ("c1", "c2", "c1"):
            api.post("/v1/events", json={"type": "add_to_cart", "user_id": "fan", "item_id": item})
        api.post("/v1/events", json={"type": "view", "user_id": "other", "item_id": "t1"})
        r = api.post("/v1/push/promotions/coffee-week/run")
        assert r.status_code == 200, r.text
        assert r.json()["outcomes"].get("sent", 0) >= 1
        (msg,) = [
            m
            for m in api.get("/v1/users/fan/push").json()["messages"]
            if m["trigger"] == "promotion"
        ]
        assert msg["title"] == "Coffee week"
        assert msg["data"]["coupon"] == "BEANS"
        assert msg["body"] == "Code BEANS"
        assert msg["items"] and all(i["item_id"].startswith("c") for i in msg["items"])


def test_push_tables_live_beside_the_store_not_in_its_file(api: TestClient, tmp_path: Path) -> None:
    """SQLite has one writer per file: a decision round must not hold the event log's lock."""
    import sqlite3

    views(api, "u1", "s0", "s1", "s2")  # three views in one category: an in-session nudge
    with sqlite3.connect(tmp_path / "shop.push.db") as push_db:
        assert push_db.execute("SELECT COUNT(*) FROM push_messages").fetchone()[0] >= 1
    with sqlite3.connect(tmp_path / "shop.db") as store_db:
        tables = {r[0] for r in store_db.execute("SELECT name FROM sqlite_master")}
    assert not any(t.startswith("push_") for t in tables), tables
    # The push file's write lock held elsewhere does not stop ingestion.
    holder = sqlite3.connect(tmp_path / "shop.push.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        r = api.post("/v1/events", json={"type": "cart", "user_id": "u2", "item_id": "t1"})
        assert r.status_code == 202, r.text
    finally:
        holder.execute("ROLLBACK")
        holder.close()
