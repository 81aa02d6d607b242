"""Item features and cold-start similarity through the API (SYNTHETIC catalog)."""

from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient

CATALOG = [
    {"item_id": "H1", "title": "White hanging heart T-light holder", "category": "Home > Candles",
     "price": 10, "original_price": 12.5, "stock": 3},
    {"item_id": "H2", "title": "Pink polka dot cake stand", "category": "Home > Kitchen",
     "price": 20},
    {"item_id": "H3", "title": "Garden spade", "category": "Garden > Tools", "price": 30},
    {"item_id": "H4", "title": "Enamel watering can", "category": "Garden > Tools", "price": 40},
    {"item_id": "H5", "title": "Wooden bird house", "category": "Garden > Decor", "price": 50},
]  # fmt: skip


def _put_catalog(client: TestClient) -> None:
    assert client.put("/v1/items", json=CATALOG).status_code == 200


def test_a_new_item_has_content_neighbours_before_any_event(client: TestClient) -> None:
    _put_catalog(client)
    new = {"title": "Cream hanging heart t-light holder", "category": "Home > Candles"}
    assert client.put("/v1/items/NEW1", json=new).status_code == 200
    body = client.get("/v1/items/NEW1/similar?k=3").json()
    first = body["items"][0]
    assert first["item_id"] == "H1"
    assert first["source"] == "content"
    assert first["reason"] == "similar to Cream hanging heart t-light holder"
    assert first["score"] > 0.5
    assert body["sources"]["content"] >= 1
    assert (
        client.post(
            "/v1/events", json={"type": "view", "user_id": "u", "item_id": "H3"}
        ).status_code
        == 202
    )  # events are not needed, and do not break the fallback
    assert client.get("/v1/items/NEW1/similar?k=1").json()["items"][0]["item_id"] == "H1"


def test_out_of_stock_items_are_not_proposed_as_content_neighbours(client: TestClient) -> None:
    _put_catalog(client)
    client.put("/v1/items/H1", json={**CATALOG[0], "stock": 0})
    client.put("/v1/items/NEW2", json={"title": "hanging heart holder", "category": "Home"})
    ids = [i["item_id"] for i in client.get("/v1/items/NEW2/similar?k=5").json()["items"]]
    assert "H1" not in ids


def test_item_features_endpoint(client: TestClient) -> None:
    _put_catalog(client)
    client.put("/v1/items/DUP", json={"title": "garden  SPADE!", "price": 35})
    body = client.get("/v1/items/H1/features").json()
    assert body["levels"] == ["Home", "Candles", None]
    assert body["discount_pct"] == pytest.approx(20.0)  # 10 of 12.5
    assert body["stock_flag"] == "low_stock"
    # Home > Candles and Home have < 5 priced items -> the whole catalog (6 prices)
    prices = [10, 20, 30, 40, 50, 35]
    mean = sum(prices) / 6
    std = math.sqrt(sum((p - mean) ** 2 for p in prices) / 6)
    assert body["price_group"] == "" and body["price_group_level"] == 0
    assert body["price_group_size"] == 6
    assert body["price_z"] == pytest.approx((10 - mean) / std)
    assert body["price_percentile"] == pytest.approx(0.5 / 6)
    assert body["missing"]["description"] is True and body["missing"]["price"] is False
    assert {t["term"] for t in body["top_terms"]} <= {"white", "hanging", "heart", "light",
                                                      "holder"}  # fmt: skip
    assert body["duplicate_group"] == []
    dup = client.get("/v1/items/DUP/features").json()
    assert dup["duplicate_group"] == ["DUP", "H3"]
    assert dup["title_norm"] == "garden spade"
    assert dup["stock_flag"] == "untracked" and dup["levels"] == [None, None, None]


def test_unknown_item_features_is_404(client: TestClient) -> None:
    r = client.get("/v1/items/nope/features")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    assert "'nope' is not in the catalog" in r.json()["message"]
    _put_catalog(client)
    assert client.delete("/v1/items/H2").status_code == 204
    assert client.get("/v1/items/H2/features").status_code == 404
