"""Profile and segment endpoints (SYNTHETIC data)."""

from __future__ import annotations

from fastapi.testclient import TestClient

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def _seed(client: TestClient) -> None:
    items = [
        {"item_id": "A", "category": "Outdoor > Camping", "brand": "Acme", "price": 80,
         "original_price": 100},
        {"item_id": "B", "category": "Home > Kitchen", "brand": "Globex", "price": 10},
    ]  # fmt: skip
    users = [
        {"user_id": "ann", "age": 29, "gender": "f", "region": "UK", "timezone": "Europe/London"},
        {"user_id": "cid", "age": 50, "consent": {"personalization": False}},
    ]
    assert client.put("/v1/items", json=items).status_code == 200
    assert client.put("/v1/users", json=users).status_code == 200
    events = [
        {"type": "view", "user_id": "ann", "item_id": "A", "timestamp": T0},
        {"type": "purchase", "user_id": "ann", "item_id": "A", "timestamp": T0 + 60},
        {"type": "purchase", "user_id": "ann", "item_id": "A", "timestamp": T0 + 120},
        {"type": "purchase", "user_id": "ann", "item_id": "B", "timestamp": T0 + 180},
        {"type": "purchase", "user_id": "cid", "item_id": "B", "timestamp": T0},
    ]
    assert client.post("/v1/events", json=events).status_code == 202


def test_profile_reflects_events_just_ingested(client: TestClient) -> None:
    _seed(client)
    r = client.get("/v1/users/ann/profile")
    assert r.status_code == 200
    body = r.json()
    assert body["demographics"]["age_band"] == "25-34"
    assert body["demographics"]["timezone"] == "Europe/London"
    b = body["behaviour"]
    assert [c["key"] for c in b["categories"]] == [
        "Outdoor", "Outdoor > Camping", "Home", "Home > Kitchen",
    ]  # fmt: skip
    assert b["brands"][0]["key"] == "Acme"
    assert b["rfm"]["frequency"] == 1  # one UTC day, no session: one order
    assert b["rfm"]["monetary"] == 80 + 80 + 10
    assert b["price"]["discounted_purchases"] == 2
    assert b["funnel"] == {
        "views": 1, "carts": 0, "purchases": 3, "favorites": 0,
        "cart_rate": 0.0, "purchase_rate": 3.0, "cart_to_purchase": None,
    }  # fmt: skip
    assert b["activity"]["lifecycle"] in {"new", "active", "at_risk", "churned"}
    assert {"name": "bargain hunter", "rule": "bargain_hunter",
            "evidence": "2 of 3 purchases discounted"} in body["tags"]  # fmt: skip

    ev = {"type": "add_to_cart", "user_id": "ann", "item_id": "B", "timestamp": T0 + 240}
    assert client.post("/v1/events", json=ev).status_code == 202
    after = client.get("/v1/users/ann/profile").json()["behaviour"]
    assert after["funnel"]["carts"] == 1 and after["recent"]["carted"] == ["B"]


def test_declined_personalization_returns_demographics_only(client: TestClient) -> None:
    _seed(client)
    body = client.get("/v1/users/cid/profile").json()
    assert body["personalization"] is False
    assert body["behaviour"] is None and body["tags"] == [] and body["segment"] is None
    assert body["demographics"]["age_band"] == "45-54"
    # revoking consent later drops what was built
    r = client.put("/v1/users/ann", json={"age": 29, "consent": {"personalization": False}})
    assert r.status_code == 200
    assert client.get("/v1/users/ann/profile").json()["behaviour"] is None


def test_unknown_user_is_404(client: TestClient) -> None:
    r = client.get("/v1/users/ghost/profile")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found" and "ghost" in r.json()["message"]


def test_no_segments_before_any_fit(client: TestClient) -> None:
    body = client.get("/v1/segments").json()
    assert body == {"fitted_at": body["fitted_at"], "segments": []}
    r = client.get("/v1/segments/0/users")
    assert r.status_code == 404 and "no segments" in r.json()["message"]


def test_segments_of_the_simulated_shop(shop_client: TestClient) -> None:
    body = shop_client.get("/v1/segments").json()
    segments = body["segments"]
    assert len(segments) == 8  # 60 simulated users: k = min(8, 60 // 5)
    assert sum(s["size"] for s in segments) == 60
    assert [s["id"] for s in segments] == list(range(8))
    assert all(s["name"] and s["description"] for s in segments)
    first = segments[0]
    page = shop_client.get(f"/v1/segments/{first['id']}/users?limit=3&offset=1").json()
    assert page["total"] == first["size"] and page["limit"] == 3 and page["offset"] == 1
    everyone = shop_client.get(f"/v1/segments/{first['id']}/users?limit=1000").json()["users"]
    assert page["users"] == everyone[1:4]
    card = shop_client.get(f"/v1/users/{everyone[0]}/profile").json()
    assert card["segment"] == {"id": first["id"], "name": first["name"]}
    assert len(card["behaviour"]["categories"]) <= 10  # profiles.top_n
    missing = shop_client.get("/v1/segments/99/users")
    assert missing.status_code == 404 and "segment 99" in missing.json()["message"]
    assert shop_client.get("/v1/segments/0/users?limit=0").status_code == 422


def test_a_merged_anonymous_session_joins_the_profile(client: TestClient) -> None:
    _seed(client)
    anon = [
        {"type": "view", "session_id": "tab-9", "item_id": "B", "timestamp": T0 + 300},
        {"type": "add_to_cart", "session_id": "tab-9", "item_id": "B", "timestamp": T0 + 301},
    ]
    assert client.post("/v1/events", json=anon).status_code == 202
    before = client.get("/v1/users/ann/profile").json()["behaviour"]["funnel"]
    assert (before["views"], before["carts"]) == (1, 0)  # anonymous: no profile yet
    assert client.post("/v1/users/ann/merge", json={"session_id": "tab-9"}).status_code == 200
    after = client.get("/v1/users/ann/profile").json()["behaviour"]
    assert (after["funnel"]["views"], after["funnel"]["carts"]) == (2, 1)
    assert after["recent"]["carted"] == ["B"]
